# Benchmark clients: the recv_into reader that runs in a separate process
# (`python benchclients.py read PORT PATH STREAMS [--blake3]`), parallel curl, and small
# HTTP helpers (JSON requests, a sendfile PUT, a verified pull, cache prune, image create).
# Invariants: traffic only to 127.0.0.1; a pull is checked for its length (and BLAKE3 when
# asked) before its time counts; every call has a timeout. Not a test, not part of the package.
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


# ------------------------------------------------------------------ clients

def run_reader(port: int, path: str, streams: int, *, verify: bool = False,
               timeout: float = 300) -> dict:
    """Run the recv_into reader in a separate process; returns its JSON result."""
    cmd = [sys.executable, str(HERE / "benchclients.py"), "read", str(port), path, str(streams)]
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


def put_file(port: int, path: str, file: Path, timeout: float = 600,
             headers: dict[str, str] | None = None) -> tuple[int, float, bytes]:
    """PUT a file with Content-Length; the body goes out with socket.sendfile. Returns (status,
    seconds from the first byte sent to the response head, response bytes)."""
    size = file.stat().st_size
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        t0 = time.perf_counter()
        sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                      + "Connection: close\r\n\r\n").encode())
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


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "read":
        reader_main(sys.argv[2:])
    else:
        sys.exit("usage: benchclients.py read PORT PATH STREAMS [--blake3]")
