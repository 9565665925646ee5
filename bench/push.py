#!/usr/bin/env python3
# Upload benchmark: HTTP upload of 1 GiB (`PUT /v2/images/{id}/file` with Content-Length, the
# client sends with sendfile) to a tessera node, against the engine's direct ingest of the same
# bytes (`Engine.upload` with an async source of 1 MiB slices from memory) in the same run,
# interleaved. Each measurement gets a fresh data directory, so neither side is helped by
# chunks already stored. Reports the ratio HTTP / engine (target >= 0.8), CPU seconds per GiB
# and the node's peak memory during the upload (target < 300 MB).
# Runtime is bounded (--max-seconds); every process is stopped by its pid; temp data removed.
#
#   python bench/push.py [--size-mib 1024] [--rounds 3]
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402


def http_upload(base: Path, payload: Path, size: int, python: str) -> dict:
    node = B.start_tessera(base, python=python)
    try:
        image_id = B.create_image(node.port, "bench-push")
        cpu0 = B.cpu_seconds(node.pid)
        with B.MemSampler(node.pid) as mem:
            status, secs, resp = B.put_file(node.port, f"/v2/images/{image_id}/file", payload)
        cpu = B.cpu_seconds(node.pid) - cpu0
        if status != 204:
            raise RuntimeError(f"upload -> {status}: {resp[:500]!r}\n{node.log_tail()}")
        st, rec = B.http_json(node.port, "GET", f"/v2/images/{image_id}")
        if st != 200 or rec.get("status") != "active" or rec.get("size") != size:
            raise RuntimeError(f"image after upload: {st} {rec}")
        return {"gbps": size / secs / 1e9, "seconds": secs, "cpu_s_per_gib": cpu / (size / B.GiB),
                "mem_peak": dict(mem.peak), "checksum": rec.get("checksum")}
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


def engine_upload(data_dir: Path, data: bytes, piece: int) -> dict:
    import trio

    from tessera.engine.config import EngineConfig
    from tessera.engine.engine import Engine

    async def run() -> dict:
        engine = await Engine.open(EngineConfig(data_dir=data_dir))
        try:
            rec = await engine.create_image({"name": "bench-push", "disk_format": "raw",
                                             "container_format": "bare"}, owner=None)
            view = memoryview(data)

            async def source():
                for off in range(0, len(view), piece):
                    yield view[off:off + piece]

            cpu0 = time.process_time()
            t0 = time.perf_counter()
            done = await engine.upload(rec.id, source(), expected_size=len(data))
            secs = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            if done.status != "active" or done.size != len(data):
                raise RuntimeError(f"engine upload ended with {done.status} size {done.size}")
            return {"gbps": len(data) / secs / 1e9, "seconds": secs,
                    "cpu_s_per_gib": cpu / (len(data) / B.GiB), "checksum": done.checksum}
        finally:
            await engine.aclose()

    try:
        return trio.run(run)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--piece-kib", type=int, default=1024, help="engine source piece size")
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs tessera")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    size = a.size_mib * B.MiB
    deadline = B.Deadline(a.max_seconds)
    with B.workspace("tessera-bench-push-", a.keep, a.tmp) as base:
        payload = base / "payload.bin"
        B.make_payload(payload, size, seed=b"tessera-push")
        data = payload.read_bytes()
        print(f"payload {size} bytes")
        http_runs, engine_runs = [], []
        for r in range(a.rounds):
            if r and deadline.left() < 60:
                print("time budget reached; stopping rounds")
                break
            steps = [("http", lambda: http_upload(base / f"node-{r}", payload, size, a.python)),
                     ("engine", lambda: engine_upload(base / f"engine-{r}", data, a.piece_kib * 1024))]
            if r % 2:
                steps.reverse()
            for name, fn in steps:
                res = fn()
                (http_runs if name == "http" else engine_runs).append(res)
                extra = ""
                if "mem_peak" in res:
                    extra = (f"  peak RSS {res['mem_peak'].get('VmHWM', 0) / 1e6:.0f} MB"
                             f" (anon {res['mem_peak'].get('RssAnon', 0) / 1e6:.0f} MB)")
                print(f"round {r + 1} {name:<7} {res['gbps']:6.3f} GB/s  CPU "
                      f"{res['cpu_s_per_gib']:.2f} s/GiB{extra}", flush=True)
        checks = {x["checksum"] for x in http_runs + engine_runs}
        if len(checks) != 1:
            raise RuntimeError(f"checksums differ between runs: {checks}")
        hg = B.median([x["gbps"] for x in http_runs])
        eg = B.median([x["gbps"] for x in engine_runs])
        ratios = [h["gbps"] / e["gbps"] for h, e in zip(http_runs, engine_runs)]
        peak = max(x["mem_peak"].get("VmHWM", 0) for x in http_runs)
        peak_anon = max(x["mem_peak"].get("RssAnon", 0) for x in http_runs)
        print(f"\nmedians over {len(http_runs)} interleaved rounds:")
        print(f"  HTTP PUT     {hg:.3f} GB/s  server CPU {B.median([x['cpu_s_per_gib'] for x in http_runs]):.2f} s/GiB")
        print(f"  engine       {eg:.3f} GB/s  CPU {B.median([x['cpu_s_per_gib'] for x in engine_runs]):.2f} s/GiB")
        print(f"  ratio HTTP/engine {hg / eg:.2f} (per round {', '.join(f'{x:.2f}' for x in ratios)})"
              f"  target >= 0.8: {'ok' if hg / eg >= 0.8 else 'MISS'}")
        print(f"  node peak RSS during uploads {peak / 1e6:.0f} MB (anon {peak_anon / 1e6:.0f} MB)"
              f"  target < 300 MB: {'ok' if peak < 300e6 else 'MISS'}")
        out = B.write_results("push", {
            "size": size, "rounds": len(http_runs), "http": http_runs, "engine": engine_runs,
            "ratio_of_medians": hg / eg, "ratio_per_round": ratios, "target": 0.8,
            "peak_rss": peak, "peak_rss_anon": peak_anon,
            "host": {"nproc": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        })
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
