# Fixtures for cluster tests: config files for N nodes on 127.0.0.1 and node processes started
# exactly as a user starts them (`python -m tessera serve --config FILE`), in-process clusters
# of real engines and peer sockets, and the polling helper every cluster test waits with.
# Invariants: every process started here is stopped here by its pid (at teardown at the
# latest); every in-process engine opened here is closed here; ports are fresh.
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    id: str
    config: Path
    data_dir: Path
    api_port: int
    peer_port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    wrapper: tuple[str, ...] = ()       # a command prefix (e.g. setpriv, for the netns test)

    @property
    def peer(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "tessera", "serve", "--config",
             str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.config.parent)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.id} exited: {self.log()}")
            try:
                if self.request("GET", "/healthcheck")[0] == 200 and _open(self.peer_port):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"node {self.id} did not start: {self.log()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def request(self, method: str, path: str, body=None, headers=None,
                timeout: float = 60) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def create(self, **fields) -> str:
        doc = {"disk_format": "raw", "container_format": "bare", **fields}
        status, body = self.request("POST", "/v2/images", json.dumps(doc),
                                    {"Content-Type": "application/json"})
        assert status == 201, body
        return json.loads(body)["id"]

    def upload(self, image_id: str, data: bytes) -> int:
        status, _ = self.request("PUT", f"/v2/images/{image_id}/file", data,
                                 {"Content-Type": "application/octet-stream"})
        return status

    def image(self, image_id: str) -> tuple[int, dict]:
        status, body = self.request("GET", f"/v2/images/{image_id}")
        return status, (json.loads(body) if status == 200 else {})

    def download(self, image_id: str) -> tuple[int, bytes]:
        return self.request("GET", f"/v2/images/{image_id}/file")


def _open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def make_cluster(root: Path, ids=("a", "b", "c"), *, replicas: int = 3, write_quorum: int = 2,
                 interval: float = 0.5, extra: str = "", engine: str = "") -> list[Node]:
    """Config files (and a shared key) for nodes `ids` on fresh 127.0.0.1 ports; `extra`:
    more lines for the [cluster] table, `engine`: lines of an [engine] table."""
    key = root / "cluster.key"
    if not key.exists():
        key.write_text(os.urandom(32).hex() + "\n")
    nodes = [Node(i, root / f"{i}.toml", root / i, free_port(), free_port(),
                  root / f"{i}.log") for i in ids]
    table = "".join(f'\n[[cluster.nodes]]\nid = "{n.id}"\napi = "127.0.0.1:{n.api_port}"\n'
                    f'peer = "127.0.0.1:{n.peer_port}"\n' for n in nodes)
    for n in nodes:
        n.config.write_text(
            f'[node]\nid = "{n.id}"\ndata_dir = "{n.data_dir}"\n\n'
            + (f'[engine]\n{engine}\n' if engine else '') +
            f'[api]\nbind = "127.0.0.1:{n.api_port}"\n\n'
            f'[cluster]\nbind = "127.0.0.1:{n.peer_port}"\nkey_file = "cluster.key"\n'
            f'replicas = {replicas}\nwrite_quorum = {write_quorum}\n'
            f'anti_entropy_interval = {interval}\n{extra}' + table)
    return nodes


def reports(config: Path) -> dict[str, dict]:
    """Every node's status report by node id (the code behind `tessera status`, in this
    process: polling it is cheap)."""
    from tessera.config import load
    from tessera.replication.status import cluster_status
    doc = cluster_status(load(config).cluster)
    return {r["node"]: r for r in doc["nodes"]}


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(config: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "tessera", "status", "--config", str(config),
                          "--json"], capture_output=True, text=True, timeout=60,
                         cwd=config.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    """wait_for(predicate, timeout, what): the predicate's first truthy value, polled."""
    return wait_for


@pytest.fixture
def cluster_factory():
    """make_cluster(root, ..., start=False) for tests that need their own settings; with
    start=True every node is started. Every node made is stopped by pid at teardown (a
    test may stop and restart nodes itself before that)."""
    made: list[Node] = []

    def factory(root: Path, *args, start: bool = False, **kwargs) -> list[Node]:
        nodes = make_cluster(root, *args, **kwargs)
        made.extend(nodes)
        if start:
            for n in nodes:
                n.start()
        return nodes

    try:
        yield factory
    finally:
        for n in made:
            n.stop()


@pytest.fixture
def cluster(tmp_path, cluster_factory):
    """Three running nodes a, b, c (R=3, W=2); stopped by pid afterwards."""
    return cluster_factory(tmp_path, start=True)


@pytest.fixture
def cluster_status():
    """`tessera status --config FILE --json`, parsed."""
    return status


@pytest.fixture
def cluster_reports():
    """reports(config): every node's status report by node id, in this process."""
    return reports


@pytest.fixture
async def engine_cluster(tmp_path):
    """start(ids, **cluster_settings) -> (engines, nodes) by node id: real engines under
    tmp_path/<id> (durable=False), each with a ClusterNode on fresh 127.0.0.1 ports and a
    shared key, running in this fixture's nursery; cancelled and closed at teardown."""
    from tessera.config import ClusterConfig, NodeAddress
    from tessera.engine.config import EngineConfig
    from tessera.engine.engine import Engine
    from tessera.replication.node import ClusterNode

    engines: dict = {}
    async with trio.open_nursery() as nursery:
        async def start(ids, **settings):
            key = os.urandom(32)
            key_file = tmp_path / "cluster.key"
            key_file.write_text(key.hex())
            addrs = tuple(NodeAddress(i, f"127.0.0.1:{free_port()}",
                                      f"127.0.0.1:{free_port()}") for i in ids)
            nodes = {}
            for addr in addrs:
                engines[addr.id] = await Engine.open(EngineConfig(
                    data_dir=tmp_path / addr.id, node_id=addr.id, durable=False))
                cfg = ClusterConfig(node_id=addr.id, bind=addr.peer, key_file=key_file,
                                    nodes=addrs, **settings)
                nodes[addr.id] = ClusterNode(cfg, engines[addr.id], key)
                await nursery.start(nodes[addr.id].run)
            return engines, nodes

        yield start
        nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await trio.sleep(0.05)
            for e in engines.values():
                await e.aclose()


@pytest.fixture
async def replica_engine(tmp_path):
    """One engine (node "a", durable=False) under tmp_path/a, closed at teardown."""
    from tessera.engine.config import EngineConfig
    from tessera.engine.engine import Engine

    engine = await Engine.open(EngineConfig(data_dir=tmp_path / "a", node_id="a",
                                            durable=False))
    try:
        yield engine
    finally:
        await engine.aclose()
