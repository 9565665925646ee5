#!/usr/bin/env python3
# Metadata API benchmark: keep-alive `GET /v2/images/{id}` and `GET /v2/images?limit=20` on a
# tessera node holding 1,000 and then 100,000 images (created through the engine facade
# straight into the data directory before the node starts), driven by wrk (else a raw-socket
# keep-alive client), against baselines in the same run, interleaved: nginx serving the very
# same response bytes as static files, and a trio+h11 server answering them canned (the
# ceiling of this architecture). The baselines get the very same request lines (GET image:
# the same 200 /v2/images/{id} paths, so the load generator does the same work for each
# server). Ratios: req/s against each baseline, and server CPU per request (baseline's over
# tessera's: the share of the ceiling's capacity, steadier than req/s on a shared host).
# Targets: >= 5,000 req/s for GET image, >= 1,500 req/s for a 20-image page. tessera runs
# with `[api] workers = --workers` (default 2: the main process and one API worker process
# answering reads, http/workers.py), and, for reference, as a single process on a copy of the
# same data in the same rounds. Runtime bounded by --max-seconds; processes stopped by pid;
# temp removed.
#
#   python bench/api.py [--counts 1000,100000] [--rounds 3] [--duration 5] [--workers 2]
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

TARGETS = {"image": 5000.0, "list20": 1500.0}

CANNED_SERVER = r"""
import sys, trio, h11
routes = {}
for arg in sys.argv[2:]:
    path, _, file = arg.partition("=")
    routes[path] = open(file, "rb").read()
async def handle(stream):
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data:
                    return
            elif isinstance(ev, h11.Request):
                body = routes.get(ev.target.decode().split("?")[0], b"{}")
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=[
                    ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]))
                    + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            elif isinstance(ev, h11.EndOfMessage):
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            else:
                return
    except (trio.BrokenResourceError, h11.RemoteProtocolError):
        return
async def main():
    await trio.serve_tcp(handle, int(sys.argv[1]), host="127.0.0.1")
trio.run(main)
"""


class Canned:
    def __init__(self, routes: dict[str, Path]):
        self.port = B.free_port()
        args = [f"{p}={f}" for p, f in routes.items()]
        self.proc = subprocess.Popen([sys.executable, "-c", CANNED_SERVER, str(self.port), *args])
        B.wait_port(self.port, self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        B.stop(self.proc)


# ------------------------------------------------------------------ populating

def populate(data_dir: Path, start: int, count: int, concurrency: int = 64) -> float:
    """Create `count` images through the engine facade; returns seconds taken."""
    import trio

    from tessera.engine.config import EngineConfig
    from tessera.engine.engine import Engine

    async def run() -> float:
        engine = await Engine.open(EngineConfig(data_dir=data_dir))
        try:
            t0 = time.perf_counter()
            todo = iter(range(start, start + count))

            async def worker():
                for i in todo:
                    await engine.create_image({
                        "name": f"image-{i:07d}", "disk_format": ("raw", "qcow2")[i % 2],
                        "container_format": "bare", "min_disk": i % 20, "min_ram": 512,
                        "visibility": ("public", "shared", "private")[i % 3],
                        "tags": [f"t{i % 7}", "bench"], "os_distro": "debian",
                        "os_version": f"{i % 13}", "hw_disk_bus": "virtio",
                    }, owner=f"{i % 50:032x}")

            async with trio.open_nursery() as n:
                for _ in range(concurrency):
                    n.start_soon(worker)
            return time.perf_counter() - t0
        finally:
            await engine.aclose()

    return trio.run(run)


# ------------------------------------------------------------------ load generators

WRK_LUA = """
paths = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1], {["Accept"] = "application/json"})
end
"""


def run_wrk(port: int, paths: list[str], duration: float, conns: int, threads: int,
            base: Path) -> dict:
    script = base / f"wrk-{port}-{abs(hash(tuple(paths))) % 10**8}.lua"
    if not script.exists():
        script.write_text(WRK_LUA % ", ".join(json.dumps(p) for p in paths))
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=duration + 30)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stderr}")
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:(.*)", text)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
    if bad:
        raise RuntimeError(f"{bad.group(1)} non-2xx responses from port {port}:\n{text}")
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"),
            "socket_errors": errors.group(1).strip() if errors else None}


def run_raw_client(port: int, paths: list[str], duration: float, conns: int) -> dict:
    """Fallback without wrk: `conns` threads, each a keep-alive socket, one request at a time."""
    counts = [0] * conns
    stop_at = time.monotonic() + duration

    def worker(k: int) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        i = k
        while time.monotonic() < stop_at:
            p = paths[i % len(paths)]
            i += 1
            s.sendall(f"GET {p} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n".encode())
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, buf = buf.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:200])
            n = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            while len(buf) < n:
                buf += s.recv(65536)
            buf = buf[n:]
            counts[k] += 1
        s.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": sum(counts) / (time.monotonic() - t0), "p50": None, "p99": None}


# ------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--counts", default="1000,100000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2,
                    help="[api] workers of the measured node (1: no single-process reference)")
    ap.add_argument("--max-seconds", type=float, default=420)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    counts = [int(x) for x in a.counts.split(",")]
    deadline = B.Deadline(a.max_seconds)
    use_wrk = shutil.which("wrk") is not None
    results: dict = {"counts": {}, "workers": a.workers, "client": f"wrk -t{a.threads} -c{a.conns} -d{a.duration}s"
                     if use_wrk else f"raw-socket keep-alive client, {a.conns} connections"}

    def load(port, paths, base):
        if use_wrk:
            return run_wrk(port, paths, a.duration, a.conns, a.threads, base)
        return run_raw_client(port, paths, a.duration, a.conns)

    with B.workspace("tessera-bench-api-", a.keep, a.tmp) as base:
        data_dir = base / "data"
        have = 0
        for count in counts:
            if deadline.left() < 60:
                print(f"time budget reached before {count} images")
                break
            secs = populate(data_dir, have, count - have)
            print(f"created {count - have} images through the engine in {secs:.1f}s "
                  f"({(count - have) / secs:.0f}/s)", flush=True)
            have = count
            procs = []
            single = None
            try:
                node = B.start_tessera(base / "node", python=a.python, data_dir=data_dir,
                                       config_text=f"[api]\nworkers = {a.workers}\n")
                procs.append(node)
                if a.workers > 1:          # the one-process reference, on a copy of the data
                    copy = base / f"data-single-{count}"
                    shutil.copytree(data_dir, copy)
                    single = B.start_tessera(base / "single", python=a.python, data_dir=copy)
                    procs.append(single)
                st, page = B.http_json(node.port, "GET", "/v2/images?limit=1000")
                if st != 200:
                    raise RuntimeError(f"list -> {st} {page}\n{node.log_tail()}")
                ids = [i["id"] for i in page["images"]]
                random.Random(1).shuffle(ids)
                ids = ids[:200]
                # the same response bytes, served statically by the baselines
                www = base / f"www-{count}"
                www.mkdir()
                st, one = B.http_json(node.port, "GET", f"/v2/images/{ids[0]}")
                (www / "image.json").write_bytes(json.dumps(one).encode())
                (www / "list20.json").write_bytes(json.dumps(
                    B.http_json(node.port, "GET", "/v2/images?limit=20")[1]).encode())
                image_paths = [f"/v2/images/{i}" for i in ids]
                nginx = B.start_nginx(base / f"nginx-{count}", www, extra_locations=(
                    "location /v2/images/ { default_type application/json; "
                    "try_files /image.json =404; }")) if B.nginx_binary() else None
                if nginx:
                    procs.append(nginx)
                canned = Canned({"/list20.json": www / "list20.json",
                                 **{p: www / "image.json" for p in image_paths}})
                procs.append(canned)

                workloads = {
                    "image": {"tessera": image_paths, "static": image_paths},
                    "list20": {"tessera": ["/v2/images?limit=20"], "static": ["/list20.json"]},
                }
                servers = [("tessera", node)] + \
                    ([("tessera 1 process", single)] if single else []) + \
                    ([("nginx", nginx)] if nginx else []) + [("trio+h11 canned", canned)]
                samples: dict = {}
                for r in range(a.rounds):
                    if r and deadline.left() < 40:
                        print("time budget reached; stopping rounds")
                        break
                    order = servers if r % 2 == 0 else list(reversed(servers))
                    for wl, paths in workloads.items():
                        for name, srv in order:
                            p = paths["tessera"] if name.startswith("tessera") else \
                                paths["static"]
                            cpu0 = B.tree_cpu_seconds(srv.pid)
                            res = load(srv.port, p, base)
                            cpu = B.tree_cpu_seconds(srv.pid) - cpu0
                            res["server_cpu_us_per_req"] = cpu / (res["rps"] * a.duration) * 1e6
                            samples.setdefault((wl, name), []).append(res)
                            print(f"  {count:>6} {wl:<7} {name:<18} {res['rps']:9.0f} req/s  "
                                  f"p50 {res['p50']}  p99 {res['p99']}  server "
                                  f"{res['server_cpu_us_per_req']:.0f} us/req", flush=True)
                mem = B.mem_status(node.pid)
            finally:
                if single is not None:
                    shutil.rmtree(copy, ignore_errors=True)
                for p in reversed(procs):
                    p.stop()
            summary = {}
            for wl in workloads:
                t = B.median([s["rps"] for s in samples[(wl, "tessera")]])
                row = {"tessera_rps": t, "target_rps": TARGETS[wl], "met": t >= TARGETS[wl],
                       "tessera_us_per_req": B.median([s["server_cpu_us_per_req"]
                                                       for s in samples[(wl, "tessera")]])}
                for name, _ in servers[1:]:
                    b = B.median([s["rps"] for s in samples[(wl, name)]])
                    row[f"{name}_rps"] = b
                    row[f"ratio_vs_{name}"] = t / b
                    row[f"cpu_ratio_vs_{name}"] = B.median(
                        [s["server_cpu_us_per_req"] for s in samples[(wl, name)]]) \
                        / row["tessera_us_per_req"]
                summary[wl] = row
            results["counts"][count] = {"summary": summary, "node_rss": mem,
                                        "samples": {f"{k[0]}|{k[1]}": v for k, v in samples.items()}}
            print(f"\n{count} images, medians of {len(samples[('image', 'tessera')])} rounds:")
            for wl, row in summary.items():
                ratios = "  ".join(f"{k[9:]}: {v:.2f}" for k, v in row.items() if k.startswith("ratio_vs_"))
                cpu = "  ".join(f"{k[13:]}: {v:.2f}" for k, v in row.items()
                                if k.startswith("cpu_ratio_vs_"))
                print(f"  {wl:<7} tessera {row['tessera_rps']:8.0f} req/s "
                      f"({row['tessera_us_per_req']:.0f} us CPU/req)  target {row['target_rps']:.0f}: "
                      f"{'ok' if row['met'] else 'MISS'}   req/s ratio vs  {ratios}   "
                      f"CPU/req ratio vs  {cpu}")
            print(flush=True)
    results["host"] = {"nproc": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = B.write_results("api", results)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
