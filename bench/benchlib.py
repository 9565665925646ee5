# Shared pieces of the HTTP benchmarks (bench/pull.py, push.py, api.py): starting and stopping
# a tessera node and the baselines (nginx with sendfile, or a raw-socket sender), reading a
# process's CPU time and memory from /proc, a payload of random-ish bytes, and a recv_into
# reader that runs in a separate process (`python benchlib.py read ...`).
# Invariants: traffic only to 127.0.0.1; every process is started and stopped here by its pid
# (never by name); every wait has a timeout; temp data lives under one directory the caller
# removes. Not a test and not part of the package.
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GiB = 1 << 30
MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stop one process we started, by its pid."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------ /proc readings

def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def mem_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs value 5); False if not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemSampler:
    """Polls a process's memory every `period` seconds in a thread and keeps the peaks."""

    def __init__(self, pid: int, period: float = 0.02):
        self.pid, self.period = pid, period
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for k, v in mem_status(self.pid).items():
                    self.peak[k] = max(self.peak.get(k, 0), v)
            except OSError:
                return
            self._stop.wait(self.period)

    def __enter__(self) -> "MemSampler":
        reset_hwm(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.peak["VmHWM"] = mem_status(self.pid)["VmHWM"]
        except OSError:
            pass


# ------------------------------------------------------------------ payload

def make_payload(path: Path, size: int, seed: bytes = b"tessera-bench") -> None:
    """Random-ish bytes (BLAKE3 XOF per 64 MiB piece): incompressible, no dedup inside."""
    import blake3

    piece = 64 * MiB
    with open(path, "wb") as f:
        done, i = 0, 0
        while done < size:
            n = min(piece, size - done)
            f.write(blake3.blake3(seed + i.to_bytes(8, "big")).digest(length=n))
            done += n
            i += 1


def file_blake3(path: Path) -> str:
    import blake3

    h = blake3.blake3()
    with open(path, "rb") as f:
        while True:
            b = f.read(16 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


# ------------------------------------------------------------------ tessera node

@dataclass
class Tessera:
    proc: subprocess.Popen
    port: int
    data_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc, signal.SIGTERM, 30)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


def start_tessera(base: Path, *, python: str = sys.executable, data_dir: Path | None = None,
                  config_text: str | None = None) -> Tessera:
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    data_dir = data_dir or base / "data"
    cmd = [python, "-m", "tessera", "serve", "--data-dir", str(data_dir),
           "--bind", f"127.0.0.1:{port}"]
    if config_text:
        (base / "tessera.toml").write_text(config_text)
        cmd += ["--config", str(base / "tessera.toml")]
    log_path = base / f"tessera-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=base)
    node = Tessera(proc, port, data_dir, log_path)
    try:
        wait_port(port, proc)
    except RuntimeError:
        node.stop()
        raise RuntimeError(f"tessera did not start:\n{node.log_tail()}")
    return node


# ------------------------------------------------------------------ baselines

@dataclass
class Nginx:
    proc: subprocess.Popen
    port: int
    workers: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc, signal.SIGQUIT, 15)


def nginx_binary() -> str | None:
    for p in ("/usr/sbin/nginx", shutil.which("nginx")):
        if p and os.path.exists(p):
            return p
    return None


def start_nginx(base: Path, root: Path, *, workers: int = 1, extra_locations: str = "") -> Nginx:
    """nginx in the foreground (so the Popen pid is the master), sendfile on, serving `root`."""
    exe = nginx_binary()
    if exe is None:
        raise RuntimeError("nginx not installed")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = base / f"nginx-{port}.conf"
    tmp = base / f"nginx-{port}-tmp"
    tmp.mkdir(exist_ok=True)
    conf.write_text(f"""
user root;
worker_processes {workers};
daemon off;
pid {base}/nginx-{port}.pid;
error_log {base}/nginx-{port}-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        {extra_locations}
    }}
}}
""")
    proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(base)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return Nginx(proc, port, workers)


RAW_SENDER = r"""
import os, socket, sys, threading
path, port = sys.argv[1], int(sys.argv[2])
size = os.path.getsize(path)
def serve(c):
    with c:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d: return
            buf += d
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        with open(path, "rb") as f:
            off = 0
            while off < size:
                off += os.sendfile(c.fileno(), f.fileno(), off, min(size - off, 1 << 20))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


@dataclass
class RawSender:
    proc: subprocess.Popen
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def start_raw_sender(path: Path) -> RawSender:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RAW_SENDER, str(path), str(port)])
    wait_port(port, proc)
    return RawSender(proc, port)


# ------------------------------------------------------------------ clients

def run_reader(port: int, path: str, streams: int, *, verify: bool = False,
               timeout: float = 300) -> dict:
    """Run the recv_into reader in a separate process; returns its JSON result."""
    cmd = [sys.executable, str(HERE / "benchlib.py"), "read", str(port), path, str(streams)]
    if verify:
        cmd.append("--blake3")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"reader failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def run_curl(port: int, path: str, streams: int, timeout: float = 300) -> dict:
    """`streams` curl processes in parallel, each to /dev/null; aggregate GB/s."""
    exe = shutil.which("curl")
    if exe is None:
        raise RuntimeError("curl not installed")
    url = f"http://127.0.0.1:{port}{path}"
    t0 = time.perf_counter()
    procs = [subprocess.Popen([exe, "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                               url], stdout=subprocess.PIPE, text=True) for _ in range(streams)]
    total = 0
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        code, size = out.split()
        if code != "200":
            raise RuntimeError(f"curl got HTTP {code} from {url}")
        total += int(size)
    wall = time.perf_counter() - t0
    return {"bytes": total, "seconds": wall, "gbps": total / wall / 1e9}


def _read_one(port: int, path: str, bufsize: int, verify: bool, result: dict,
              barrier: threading.Barrier) -> None:
    buf = bytearray(bufsize)
    view = memoryview(buf)
    h = None
    if verify:
        import blake3
        h = blake3.blake3()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    barrier.wait()
    t0 = time.perf_counter()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                 .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        n = sock.recv_into(view, 65536)
        if n == 0:
            raise RuntimeError("EOF in response head")
        head += bytes(view[:n])
    head, _, rest = head.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if status != 200 or "content-length" not in headers:
        raise RuntimeError(f"unexpected response head: {lines}")
    length = int(headers["content-length"])
    got = len(rest)
    if h is not None:
        h.update(rest)
    while got < length:
        n = sock.recv_into(view, min(bufsize, length - got))
        if n == 0:
            raise RuntimeError(f"EOF after {got} of {length} bytes")
        if h is not None:
            h.update(view[:n])
        got += n
    t1 = time.perf_counter()
    sock.close()
    result.update(bytes=got, t0=t0, t1=t1, blake3=h.hexdigest() if h else None)


def reader_main(argv: list[str]) -> None:
    port, path, streams = int(argv[0]), argv[1], int(argv[2])
    verify = "--blake3" in argv
    results = [dict() for _ in range(streams)]
    barrier = threading.Barrier(streams)
    threads = [threading.Thread(target=_read_one, args=(port, path, MiB, verify, r, barrier))
               for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any("bytes" not in r for r in results):
        sys.exit("a stream failed")
    t0 = min(r["t0"] for r in results)
    t1 = max(r["t1"] for r in results)
    total = sum(r["bytes"] for r in results)
    print(json.dumps({"bytes": total, "seconds": t1 - t0, "gbps": total / (t1 - t0) / 1e9,
                      "blake3": [r["blake3"] for r in results]}))


# ------------------------------------------------------------------ HTTP helpers

def http_json(port: int, method: str, path: str, body: dict | None = None,
              headers: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Accept": "application/json", **(headers or {})}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw and raw[:1] in b"{[" else {"raw": raw[:500]})
    finally:
        conn.close()


def put_file(port: int, path: str, file: Path, timeout: float = 600) -> tuple[int, float, bytes]:
    """PUT a file with Content-Length; the body goes out with socket.sendfile. Returns (status,
    seconds from the first byte sent to the response head, response bytes)."""
    size = file.stat().st_size
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        t0 = time.perf_counter()
        sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
                      f"Connection: close\r\n\r\n").encode())
        with open(file, "rb") as f:
            if sock.sendfile(f) != size:
                raise RuntimeError("short sendfile")
        resp = b""
        while b"\r\n\r\n" not in resp:
            d = sock.recv(65536)
            if not d:
                break
            resp += d
        t1 = time.perf_counter()
        status = int(resp.split(b" ", 2)[1]) if resp else 0
        return status, t1 - t0, resp
    finally:
        sock.close()


def pull_verified(port: int, path: str, size: int, digest: str | None = None,
                  timeout: float = 900) -> float:
    """One reader pull of `path`: its seconds; raises unless `size` bytes (with the BLAKE3
    `digest`, when given) arrived."""
    res = run_reader(port, path, 1, verify=digest is not None, timeout=timeout)
    if res["bytes"] != size:
        raise RuntimeError(f"pull of {path} got {res['bytes']} bytes, expected {size}")
    if digest is not None and res["blake3"][0] != digest:
        raise RuntimeError(f"pull of {path} returned different bytes")
    return res["seconds"]


def prune_cache(port: int) -> None:
    """Evict a node's cache-resident chunks (POST /v2/cache/prune; the node runs with
    image_cache = true and cache_budget = 0)."""
    st, body = http_json(port, "POST", "/v2/cache/prune")
    if st != 200:
        raise RuntimeError(f"cache prune -> {st} {body}")


def create_image(port: int, name: str) -> str:
    st, body = http_json(port, "POST", "/v2/images",
                         {"name": name, "disk_format": "raw", "container_format": "bare"})
    if st != 201:
        raise RuntimeError(f"POST /v2/images -> {st} {body}")
    return body["id"]


# ------------------------------------------------------------------ misc

@contextmanager
def workspace(prefix: str, keep: bool = False, parent: str | None = None):
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield base
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"{name}-{stamp}.json"
    payload = {**payload, "loadavg_at_end": os.getloadavg()}   # other work on the 2 vCPUs
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path


@dataclass
class Deadline:
    seconds: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def over(self) -> bool:
        return self.left() <= 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "read":
        reader_main(sys.argv[2:])
    else:
        sys.exit("usage: benchlib.py read PORT PATH STREAMS [--blake3]")
