#!/usr/bin/env python3
# Download benchmark: a tessera node serving a 1 GiB image (random-ish bytes, uploaded over
# HTTP) against a static-file baseline serving the same bytes from a file (nginx with
# sendfile when installed, else a raw-socket sendfile server), in the same run, interleaved.
# Clients: a recv_into reader in a separate process (1 and N concurrent streams) and curl.
# Also reports the node's CPU seconds per GiB sent and its peak memory during the uploads and
# during N concurrent pulls. Runtime is bounded (--max-seconds); every process started here
# is stopped by its pid; temp data is removed unless --keep.
# With --ceiling, a third server runs in the same rounds (python client only): the least a
# Python server that verifies what it sends can do -- one thread per connection, the file
# mmapped, BLAKE3 of every 64 KiB piece compared with its expected digest, then a blocking
# sendall of 4 MiB views and MADV_DONTNEED -- the reference for how close tessera's
# verified path is to its floor (the nginx baseline verifies nothing).
#
#   python bench/pull.py [--size-mib 1024] [--rounds 3] [--streams 8] [--ceiling]
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402


CEILING_SENDER = r"""
import mmap, os, socket, sys, threading
import blake3
path, port = sys.argv[1], int(sys.argv[2])
size = os.path.getsize(path)
PIECE, BATCH = 64 * 1024, 4 * 1024 * 1024
fd = os.open(path, os.O_RDONLY)
mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
mv = memoryview(mm)
expected = [blake3.blake3(mv[o:o + PIECE]).digest() for o in range(0, size, PIECE)]
mm.madvise(mmap.MADV_DONTNEED, 0, size)
def serve(c):
    with c:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d: return
            buf += d
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        for lo in range(0, size, BATCH):
            hi = min(size, lo + BATCH)
            for o in range(lo, hi, PIECE):
                if blake3.blake3(mv[o:o + PIECE]).digest() != expected[o // PIECE]:
                    return
            c.sendall(mv[lo:hi])
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def start_ceiling_sender(path: Path, python: str) -> B.RawSender:
    port = B.free_port()
    proc = subprocess.Popen([python, "-c", CEILING_SENDER, str(path), str(port)])
    B.wait_port(port, proc, timeout=120)
    return B.RawSender(proc, port)        # the same process handle as the raw sender


def measure(label, target, client, streams, path, port, pid, size, samples, mem_peaks):
    cpu0 = B.tree_cpu_seconds(pid)
    with B.MemSampler(pid) as mem:
        if client == "python":
            res = B.run_reader(port, path, streams)
        else:
            res = B.run_curl(port, path, streams)
    cpu = B.tree_cpu_seconds(pid) - cpu0
    if res["bytes"] != size * streams:
        raise RuntimeError(f"{label}: got {res['bytes']} bytes, expected {size * streams}")
    key = (target, client, streams)
    samples.setdefault(key, []).append({"gbps": res["gbps"], "seconds": res["seconds"],
                                        "cpu_s_per_gib": cpu / (res["bytes"] / B.GiB)})
    if target == "tessera":
        peaks = mem_peaks.setdefault(f"pull x{streams}", {})
        for k, v in mem.peak.items():
            peaks[k] = max(peaks.get(k, 0), v)
    print(f"  {label:<34} {res['gbps']:6.2f} GB/s   server CPU {cpu / (res['bytes'] / B.GiB):.3f} s/GiB",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--nginx-workers", type=int, default=1)
    ap.add_argument("--baseline", choices=("auto", "nginx", "raw"), default="auto")
    ap.add_argument("--no-curl", action="store_true")
    ap.add_argument("--ceiling", action="store_true",
                    help="also measure the minimal verifying Python sender (python client)")
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs tessera")
    ap.add_argument("--tmp", default=None, help="parent folder for temp data (default system tmp)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    size = a.size_mib * B.MiB
    deadline = B.Deadline(a.max_seconds)
    procs = []
    with B.workspace("tessera-bench-pull-", a.keep, a.tmp) as base:
        try:
            www = base / "www"
            www.mkdir()
            payload = www / "payload.bin"
            t = time.perf_counter()
            B.make_payload(payload, size)
            digest = B.file_blake3(payload)
            print(f"payload {size} bytes in {time.perf_counter() - t:.1f}s, blake3 {digest[:16]}")

            node = B.start_tessera(base / "node", python=a.python)
            procs.append(node)
            mem_peaks: dict[str, dict[str, int]] = {}
            uploads = []
            image_id = B.create_image(node.port, "bench-pull")
            cpu0 = B.cpu_seconds(node.pid)
            with B.MemSampler(node.pid) as mem:
                status, secs, resp = B.put_file(node.port, f"/v2/images/{image_id}/file", payload)
            if status != 204:
                raise RuntimeError(f"upload -> {status}: {resp[:500]!r}\n{node.log_tail()}")
            uploads.append({"gbps": size / secs / 1e9, "seconds": secs,
                            "cpu_s_per_gib": (B.cpu_seconds(node.pid) - cpu0) / (size / B.GiB)})
            mem_peaks["upload"] = dict(mem.peak)
            st, rec = B.http_json(node.port, "GET", f"/v2/images/{image_id}")
            if st != 200 or rec.get("status") != "active" or rec.get("size") != size:
                raise RuntimeError(f"image after upload: {st} {rec}")
            print(f"upload over HTTP: {size / secs / 1e9:.2f} GB/s, peak RSS "
                  f"{mem.peak.get('VmHWM', 0) / B.MiB:.0f} MiB (anon {mem.peak.get('RssAnon', 0) / B.MiB:.0f} MiB)")

            use_nginx = a.baseline == "nginx" or (a.baseline == "auto" and B.nginx_binary())
            if use_nginx:
                base_srv = B.start_nginx(base / "nginx", www, workers=a.nginx_workers)
                base_name = f"nginx sendfile (workers={a.nginx_workers})"
            else:
                base_srv = B.start_raw_sender(payload)
                base_name = "raw-socket sendfile sender"
            procs.append(base_srv)
            ceil_srv = None
            if a.ceiling:
                ceil_srv = start_ceiling_sender(payload, a.python)
                procs.append(ceil_srv)

            tpath = f"/v2/images/{image_id}/file"
            bpath = "/payload.bin"
            got = B.run_reader(node.port, tpath, 1, verify=True)["blake3"][0]
            if got != digest:
                raise RuntimeError(f"tessera served different bytes: blake3 {got} != {digest}")
            print("download verified byte-identical (blake3)")

            clients = ["python"] + ([] if a.no_curl or not shutil.which("curl") else ["curl"])
            samples: dict = {}
            rounds_done = 0
            for r in range(a.rounds):
                if deadline.left() < 60 and rounds_done:
                    print("time budget reached; stopping rounds")
                    break
                print(f"round {r + 1}")
                order = [("tessera", node.port, tpath, node.pid),
                         ("baseline", base_srv.port, bpath, base_srv.pid)]
                if r % 2:
                    order.reverse()
                if ceil_srv is not None:
                    order.insert(1, ("ceiling", ceil_srv.port, bpath, ceil_srv.pid))
                for client in clients:
                    for streams in (1, a.streams):
                        for target, port, path, pid in order:
                            if target == "ceiling" and client != "python":
                                continue
                            measure(f"{target} {client} x{streams}", target, client, streams,
                                    path, port, pid, size, samples, mem_peaks)
                rounds_done += 1
        finally:
            for p in reversed(procs):
                p.stop()

        summary = []
        print(f"\nbaseline: {base_name}; {rounds_done} interleaved rounds; medians")
        print(f"{'client':<8} {'streams':>7} {'tessera GB/s':>13} {'baseline GB/s':>14} {'ratio':>6}"
              f" {'tessera CPU s/GiB':>18} {'target':>7}")
        for client in clients:
            for streams in (1, a.streams):
                ts = samples[("tessera", client, streams)]
                bs = samples[("baseline", client, streams)]
                tg = B.median([s["gbps"] for s in ts])
                bg = B.median([s["gbps"] for s in bs])
                ratios = [t["gbps"] / b["gbps"] for t, b in zip(ts, bs)]
                cpu = B.median([s["cpu_s_per_gib"] for s in ts])
                row = {"client": client, "streams": streams, "tessera_gbps": tg,
                       "baseline_gbps": bg, "ratio_of_medians": tg / bg,
                       "ratio_per_round": ratios, "tessera_cpu_s_per_gib": cpu,
                       "baseline_cpu_s_per_gib": B.median([s["cpu_s_per_gib"] for s in bs]),
                       "target": 0.9, "met": tg / bg >= 0.9}
                cs = samples.get(("ceiling", client, streams))
                if cs:
                    cg = B.median([s["gbps"] for s in cs])
                    row.update(ceiling_gbps=cg, ratio_to_ceiling=tg / cg,
                               ceiling_ratio_to_baseline=cg / bg,
                               ceiling_cpu_s_per_gib=B.median([s["cpu_s_per_gib"] for s in cs]))
                summary.append(row)
                print(f"{client:<8} {streams:>7} {tg:>13.2f} {bg:>14.2f} {tg / bg:>6.2f}"
                      f" {cpu:>18.3f} {'ok' if row['met'] else 'MISS':>7}")
                if cs:
                    print(f"{'':<8} {'':>7} minimal verifying sender {row['ceiling_gbps']:.2f} GB/s"
                          f" ({row['ceiling_ratio_to_baseline']:.2f}x baseline, CPU "
                          f"{row['ceiling_cpu_s_per_gib']:.3f} s/GiB); tessera / it "
                          f"{row['ratio_to_ceiling']:.2f}")
        print("\npeak memory of the tessera process (target < 300 MB):")
        for phase, peak in mem_peaks.items():
            print(f"  {phase:<10} VmHWM {peak.get('VmHWM', 0) / 1e6:7.0f} MB   RssAnon "
                  f"{peak.get('RssAnon', 0) / 1e6:6.0f} MB   RssFile {peak.get('RssFile', 0) / 1e6:6.0f} MB")
        out = B.write_results("pull", {
            "size": size, "streams": a.streams, "rounds": rounds_done, "baseline": base_name,
            "summary": summary, "samples": {"|".join(map(str, k)): v for k, v in samples.items()},
            "upload": uploads, "memory_peaks": mem_peaks,
            "host": {"nproc": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        })
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
