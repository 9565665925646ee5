# API worker processes (`--workers N`, http/workers.py) on a real node: the worker answers
# image reads itself (shown by stopping the main process, SIGSTOP, while it answers), hands
# every other request over with the connection (pipelined bytes and 100-continue uploads
# included), sees every committed change (the map growing under it too), and stops with the
# main process, by SIGTERM or when the main process is killed.
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h11
import pytest

from tessera.config import ConfigError, load
from tessera.http.workers import rebuilt_head

WAIT = 30.0


class Client:
    """A blocking raw HTTP/1.1 client that reads responses byte-exactly (pipelining)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError
        self.buf += data

    def response(self) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        n = int(headers.get("content-length", 0)) if status >= 200 else 0
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def close(self) -> None:
        self.sock.close()


def request(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    extra = "".join(h + "\r\n" for h in headers)
    length = f"Content-Length: {len(body)}\r\n" if body or method in ("POST", "PUT") else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}{length}\r\n").encode() \
        + body


def create(port: int, name: str) -> str:
    c = Client(port)
    body = json.dumps({"name": name, "disk_format": "raw", "container_format": "bare"})
    c.send(request("POST", "/v2/images", body.encode(), "Content-Type: application/json"))
    status, _, data = c.response()
    c.close()
    assert status == 201, data
    return json.loads(data)["id"]


def worker_pids(main_pid: int) -> list[int]:
    text = Path(f"/proc/{main_pid}/task/{main_pid}/children").read_text()
    return [int(p) for p in text.split()]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.fixture
def node(start_server):
    return start_server("--workers", "2")


def test_worker_answers_reads_while_the_main_process_is_stopped(node):
    image_id = create(node.port, "seen-by-worker")
    (worker,) = worker_pids(node.proc.pid)
    clients = [Client(node.port) for _ in range(16)]
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        for c in clients:
            c.send(request("GET", f"/v2/images/{image_id}"))
        answered: set = set()
        first = 0.0
        # the main process's share never answers now: wait for the first answer (a busy
        # host may be slow), then a moment for the rest of the worker's share
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and len(answered) < len(clients):
            if answered:
                deadline = min(deadline, first + 1.0)
            ready, _, _ = select.select([c.sock for c in clients if c not in answered],
                                        [], [], 0.2)
            for c in clients:
                if c.sock in ready:
                    status, _, body = c.response()
                    assert status == 200 and json.loads(body)["name"] == "seen-by-worker"
                    if not answered:
                        first = time.monotonic()
                    answered.add(c)
        # SO_REUSEPORT spread 16 connections over both processes (all on one: p = 2**-15)
        assert 0 < len(answered) < len(clients)
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    for c in clients:
        if c not in answered:                   # the main process answers once resumed
            status, _, body = c.response()
            assert status == 200 and json.loads(body)["id"] == image_id
        c.close()
    assert not gone(worker)


def test_pipelined_writes_move_the_connection_to_the_main_process(node):
    data = os.urandom(300_000)
    for i in range(8):                          # connections on both processes
        image_id = create(node.port, f"pipe{i}")
        c = Client(node.port)
        c.send(request("GET", f"/v2/images/{image_id}")
               + request("PUT", f"/v2/images/{image_id}/file", data,
                         "Content-Type: application/octet-stream")
               + request("GET", f"/v2/images/{image_id}")
               + request("GET", f"/v2/images/{image_id}/file")
               + request("GET", f"/v2/images?name=pipe{i}"))
        status, _, body = c.response()
        assert status == 200 and json.loads(body)["status"] == "queued"
        status, _, _ = c.response()
        assert status == 204
        status, _, body = c.response()
        rec = json.loads(body)
        assert status == 200 and rec["status"] == "active" and rec["size"] == len(data)
        status, headers, body = c.response()
        assert status == 200 and body == data and headers["content-length"] == str(len(data))
        status, _, body = c.response()
        assert status == 200 and [i["id"] for i in json.loads(body)["images"]] == [image_id]
        c.close()


def test_expect_continue_upload_through_any_process(node):
    data = os.urandom(200_000)
    for i in range(6):
        image_id = create(node.port, f"cont{i}")
        c = Client(node.port)
        c.send(request("PUT", f"/v2/images/{image_id}/file", b"",
                       "Content-Type: application/octet-stream", "Expect: 100-continue")
               .replace(b"Content-Length: 0", f"Content-Length: {len(data)}".encode()))
        status, _, _ = c.response()
        assert status == 100
        c.send(data)
        status, _, _ = c.response()
        assert status == 204
        c.send(request("GET", f"/v2/images/{image_id}/file"))
        status, _, body = c.response()
        assert status == 200 and body == data
        c.close()


def test_worker_sees_changes_and_a_grown_map(start_server, tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text("[engine]\nmap_size = 262144\n")     # 256 KiB: the writer must grow it
    node = start_server("--workers", "2", "--config", str(cfg))
    ids = [create(node.port, f"grow{i}") for i in range(300)]
    assert Path(node.data_dir, "index", "data.mdb").stat().st_size > 262144
    clients = [Client(node.port) for _ in range(12)]
    for c in clients:
        c.send(request("GET", f"/v2/images/{ids[-1]}") + request("GET", "/v2/images?limit=1000"))
        status, _, body = c.response()
        assert status == 200 and json.loads(body)["name"] == "grow299"
        status, _, body = c.response()
        assert status == 200 and len(json.loads(body)["images"]) == 300
    # a change made through one connection is seen at once through every other
    patch = json.dumps([{"op": "replace", "path": "/name", "value": "renamed"}]).encode()
    first = clients[0]
    first.send(request("PATCH", f"/v2/images/{ids[0]}", patch,
                       "Content-Type: application/openstack-images-v2.1-json-patch"))
    assert first.response()[0] == 200
    for c in clients[1:]:
        c.send(request("GET", f"/v2/images/{ids[0]}"))
        status, _, body = c.response()
        assert status == 200 and json.loads(body)["name"] == "renamed"
        c.close()
    first.close()


def test_sigterm_stops_the_workers_too(node):
    workers = worker_pids(node.proc.pid)
    assert len(workers) == 1
    assert node.stop() == 0
    assert all(gone(pid) for pid in workers)


def test_worker_exits_when_the_main_process_is_killed(node):
    (worker,) = worker_pids(node.proc.pid)
    node.proc.kill()
    node.proc.wait()
    deadline = time.monotonic() + WAIT
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(worker)


def test_workers_setting_is_checked(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text("[api]\nworkers = 3\n")
    assert load(path).server.workers == 3
    assert load(path, workers=1).server.workers == 1
    for bad in ("0", "65", '"2"'):
        path.write_text(f"[api]\nworkers = {bad}\n")
        with pytest.raises(ConfigError):
            load(path)


def test_metrics_count_the_requests_workers_answered(node):
    image_id = create(node.port, "counted")
    clients = [Client(node.port) for _ in range(16)]
    for _ in range(5):
        for c in clients:
            c.send(request("GET", f"/v2/images/{image_id}"))
            assert c.response()[0] == 200
    for c in clients:
        c.close()
    pattern = ('tessera_http_requests_total{method="GET",route="/v2/images/{image_id}",'
               'status="200"} ')
    deadline = time.monotonic() + WAIT
    seen = None
    while time.monotonic() < deadline:
        c = Client(node.port)
        c.send(request("GET", "/metrics"))
        status, _, body = c.response()
        c.close()
        assert status == 200
        line = next((ln for ln in body.decode().splitlines() if ln.startswith(pattern)), None)
        seen = None if line is None else float(line[len(pattern):])
        if seen == 80:
            break
        time.sleep(0.1)
    assert seen == 80


def test_a_node_that_cannot_open_its_engine_leaves_no_worker_behind(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    data_dir = str(tmp_path / "file" / "data")
    proc = subprocess.run([sys.executable, "-m", "tessera", "serve", "--data-dir", data_dir,
                           "--bind", "127.0.0.1:0", "--workers", "3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Not a directory" in proc.stderr
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if data_dir.encode() in cmdline.read_bytes():
                left.append(cmdline.parent.name)
        except OSError:
            pass
    assert left == []


def _parse(data: bytes):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    return conn, conn.next_event()


def test_rebuilt_head_parses_to_the_same_request_and_keeps_what_followed():
    head = (b"PUT /v2/images/x/file?a=1&b=%20 HTTP/1.1\r\nHost: h:9292\r\n"
            b"X-Auth-Token: t\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 5\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n")
    conn, event = _parse(head + b"abcdeGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    payload = rebuilt_head(event) + conn.trailing_data[0]
    assert payload == head + b"abcdeGET / HTTP/1.1\r\nHost: h\r\n\r\n"   # raw names kept
    again, event2 = _parse(payload)
    assert (event2.method, event2.target, list(event2.headers)) == \
        (event.method, event.target, list(event.headers))
    assert again.next_event() == h11.Data(data=b"abcde")


def test_rebuilt_head_of_http_1_0():
    conn, event = _parse(b"GET /versions HTTP/1.0\r\nAccept: */*\r\n\r\n")
    _, event2 = _parse(rebuilt_head(event))
    assert event2.http_version == b"1.0" and list(event2.headers) == list(event.headers)
