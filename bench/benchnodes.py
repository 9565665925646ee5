# Benchmark servers: a tessera node started as a user starts one (`python -m tessera serve`),
# and the baselines it is measured against (nginx with sendfile, a raw-socket sendfile sender).
# Invariants: traffic only to 127.0.0.1 on fresh ports; each start returns once the port
# listens (or raises with the log); each server is stopped by its pid (benchproc.stop).
# Not a test and not part of the package.
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchproc import free_port, stop, wait_port


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
