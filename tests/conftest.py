# Shared fixtures: a real tessera node started as a subprocess, exactly as a user starts one
# (`python -m tessera serve --data-dir D --bind 127.0.0.1:PORT [extra args]`).
# Invariants: traffic only to 127.0.0.1; every process started here is stopped here, by its
# pid (SIGTERM, then SIGKILL if it overstays); the fixture waits until /healthcheck answers.
from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    port: int
    data_dir: Path
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM by pid; the exit status (SIGKILL after STOP_TIMEOUT)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthcheck")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def launch(base: Path, *extra_args: str) -> RunningServer:
    base.mkdir(parents=True, exist_ok=True)
    data_dir = base / "data"
    port = free_port()
    log_path = base / "server.log"
    cmd = [sys.executable, "-m", "tessera", "serve", "--data-dir", str(data_dir),
           "--bind", f"127.0.0.1:{port}", *extra_args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=base)
    server = RunningServer(f"http://127.0.0.1:{port}", port, data_dir, proc, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not _healthy(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"tessera node did not start: {cmd}\n{server.log()[-4000:]}")
        time.sleep(0.05)
    return server


@pytest.fixture
def start_server(tmp_path):
    """Factory: start_server(*extra_args) -> RunningServer; all are stopped at teardown."""
    started: list[RunningServer] = []

    def start(*extra_args: str) -> RunningServer:
        server = launch(tmp_path / f"node{len(started)}", *extra_args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def tessera_server(start_server) -> RunningServer:
    """One node with the default configuration (noauth on 127.0.0.1)."""
    return start_server()
