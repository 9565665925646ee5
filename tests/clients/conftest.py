# Fixtures for the compatibility tests with real OpenStack clients (glanceclient, openstacksdk,
# python-openstackclient): one tessera node per test module, started as a subprocess exactly
# as a user would (`python -m tessera serve --data-dir D --bind 127.0.0.1:PORT`), sample image
# bytes on disk, and a runner for the clients' command-line tools.
# Invariants: traffic only to 127.0.0.1; every process started here is stopped here by its
# pid; the CLI tools run with a pseudo-terminal on stdin (glanceclient reads image data from
# a non-TTY stdin) and an environment stripped of OS_* variables.
from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import pty
import random
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _root_conftest():
    """tests/conftest.py (launch, RunningServer), loaded by path once per process."""
    name = "tessera_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent
                                                      / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass
class Node:
    url: str
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen

    def request(self, method: str, path: str, body=None, headers=None):
        """One plain HTTP exchange (for checks the clients do not expose)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def get_json(self, path: str, headers=None) -> dict:
        status, _, body = self.request("GET", path, headers={"Accept": "application/json",
                                                             **(headers or {})})
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


def start_node(base: Path, *, auth: str = "noauth", tokens: dict | None = None,
               workers: int = 1) -> Node:
    """Start a node (tests/conftest.py launch: up once /healthcheck answers); `tokens`
    (token -> {project_id, user_id, roles}) goes into a tokens file for the "tokens" auth
    mode; `workers`: API worker processes ([api] workers)."""
    base.mkdir(parents=True, exist_ok=True)
    args: list[str] = ["--workers", str(workers)]
    if auth != "noauth":
        conf = base / "tessera.toml"
        text = f'[api]\nauth = "{auth}"\n'
        if tokens is not None:
            (base / "tokens.json").write_text(json.dumps(tokens))
            text += f'tokens_file = "{base / "tokens.json"}"\n'
        conf.write_text(text)
        args += ["--config", str(conf)]
    try:
        server = _root_conftest().launch(base, *args)
    except RuntimeError as exc:
        pytest.fail(f"tessera serve did not come up: {exc}")
    return Node(server.url, server.port, server.data_dir, server.log_path, server.proc)


def stop_node(node: Node) -> None:
    """SIGTERM by pid (SIGKILL if it overstays), as tests/conftest.py RunningServer.stop."""
    _root_conftest().RunningServer(node.url, node.port, node.data_dir, node.proc,
                                   node.log_path).stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A tessera node in the default (noauth) mode, shared by the tests of one module; with
    an API worker process, so every client flow also crosses the hand-over of connections
    from the worker to the main process (http/workers.py)."""
    n = start_node(tmp_path_factory.mktemp("node"), workers=2)
    yield n
    stop_node(n)


@dataclass(frozen=True)
class Sample:
    path: Path
    data: bytes

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()

    @property
    def sha512(self) -> str:
        return hashlib.sha512(self.data).hexdigest()


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> Sample:
    """About 2.6 MiB: random bytes, a zero run long enough to be a zero extent, a ragged tail
    (several of glanceclient's 1 MiB upload pieces, several chunks)."""
    rnd = random.Random(20261127)
    data = rnd.randbytes(1_500_000) + bytes(300_000) + rnd.randbytes(900_001)
    path = tmp_path_factory.mktemp("sample") / "disk.img"
    path.write_bytes(data)
    return Sample(path, data)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HOME", "/tmp")
    return env


def run_tool(args: list[str], *, timeout: float = 120, cwd: Path | None = None,
             tty_stdout: bool = False, stdin_path: Path | None = None):
    """Run a client CLI from the venv; stdin is a pseudo-terminal so that glanceclient does
    not take it for image data (with tty_stdout, stdout is the terminal too: progress bars
    are drawn only on a TTY; with stdin_path, stdin is that file: image data on a pipe).
    Returns the CompletedProcess (text, stdout and stderr)."""
    exe = BIN / args[0]
    cmd = [str(exe), *args[1:]]
    master, slave = pty.openpty()
    try:
        if stdin_path is not None:
            with open(stdin_path, "rb") as stdin:
                return subprocess.run(cmd, stdin=stdin, capture_output=True, text=True,
                                      timeout=timeout, env=_clean_env(), cwd=cwd)
        if not tty_stdout:
            return subprocess.run(cmd, stdin=slave, capture_output=True, text=True,
                                  timeout=timeout, env=_clean_env(), cwd=cwd)
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                                env=_clean_env(), cwd=cwd)
        os.close(slave)
        slave = -1
        chunks: list[bytes] = []

        def drain() -> None:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO once the child closed the terminal
                    return
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        _, err = proc.communicate(timeout=timeout)
        reader.join(timeout=10)
        out = b"".join(chunks).decode("utf-8", "replace")
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err.decode("utf-8", "replace"))
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def parse_table(text: str) -> dict[str, str]:
    """A prettytable `| Property | Value |` block as a dict; wrapped values are joined."""
    out: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        key, value = cells[0], "|".join(cells[1:]).strip()
        if key in ("Property", "") and last is None:
            continue
        if key == "":
            out[last] += value
        else:
            out[key] = value
            last = key
    return out


def parse_rows(text: str) -> list[list[str]]:
    """The data rows of a prettytable list (header row dropped)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return rows[1:]


@pytest.fixture
def tool():
    return run_tool


@pytest.fixture
def table():
    return parse_table


@pytest.fixture
def rows():
    return parse_rows


@pytest.fixture(scope="module")
def make_node(tmp_path_factory):
    """Start extra nodes (other auth modes); all stopped at the end of the module."""
    started: list[Node] = []

    def make(auth: str = "noauth", tokens: dict | None = None) -> Node:
        n = start_node(tmp_path_factory.mktemp(f"node-{auth}"), auth=auth, tokens=tokens,
                       workers=2)
        started.append(n)
        return n

    yield make
    for n in started:
        stop_node(n)


TOKENS = {  # for the "tokens" auth mode: two projects, plain members (no admin)
    "tok-owner": {"project_id": "a" * 32, "user_id": "user-a", "roles": ["member"]},
    "tok-consumer": {"project_id": "b" * 32, "user_id": "user-b", "roles": ["member"]},
}


@pytest.fixture(scope="module")
def token_node(make_node):
    """A node in the "tokens" auth mode with TOKENS."""
    return make_node("tokens", TOKENS)


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)
