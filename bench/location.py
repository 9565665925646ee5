#!/usr/bin/env python3
# Image-location benchmark: a tessera node with a local default store and a read-only http
# store; an image registered at an HTTP location served by a local origin (nginx with
# sendfile, which answers Range requests), in the same run:
# - the registration (POST /v2/images/{id}/locations until active: the origin read once,
#   hashed, inspected, chunked into the cache tier) against a plain read of the origin;
# - cold pull (the node's cached chunks evicted: every byte fetched from the origin with
#   ranged GETs, verified, streamed on and kept) against a warm pull of the same image (its
#   chunks in the cache tier again); the figure is the ratio cold/warm, per round.
# Rounds are interleaved. Every process started here is stopped by its pid; temp data is
# removed unless --keep; results go to bench/results/location-<stamp>.json.
#
#   python bench/location.py [--size-mib 512] [--rounds 3]
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402


def register(port: int, url: str, deadline: B.Deadline) -> tuple[str, float]:
    image_id = B.create_image(port, "located")
    t0 = time.perf_counter()
    st, body = B.http_json(port, "POST", f"/v2/images/{image_id}/locations", {"url": url})
    if st != 202:
        raise RuntimeError(f"POST locations -> {st} {body}")
    while True:
        st, img = B.http_json(port, "GET", f"/v2/images/{image_id}")
        if img.get("status") == "active":
            return image_id, time.perf_counter() - t0
        if img.get("status") == "queued":
            _, tasks = B.http_json(port, "GET", f"/v2/images/{image_id}/tasks")
            raise RuntimeError(f"registration failed: {tasks}")
        if deadline.over():
            raise RuntimeError("registration did not finish in time")
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs tessera")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    size = a.size_mib * B.MiB
    deadline = B.Deadline(a.max_seconds)
    procs: list = []
    with B.workspace("tessera-bench-location-", a.keep, a.tmp) as base:
        try:
            root = base / "origin"
            root.mkdir()
            B.make_payload(root / "disk.raw", size)
            digest = B.file_blake3(root / "disk.raw")
            origin = B.start_nginx(base / "nginx", root)
            procs.append(origin)
            config = "\n".join([
                "[engine]", "image_cache = true", "cache_budget = 0",
                "cache_prune_interval = 86400.0", "",
                "[[stores]]", 'id = "local"', "default = true", "",
                "[[stores]]", 'id = "web"', 'type = "http"', "",
                "[import]", 'allowed_hosts = ["127.0.0.1"]',
                f"allowed_ports = [{origin.port}]", ""])
            node = B.start_tessera(base / "node", python=a.python, config_text=config)
            procs.append(node)
            url = f"http://127.0.0.1:{origin.port}/disk.raw"
            direct = B.pull_verified(origin.port, "/disk.raw", size, digest)
            image_id, reg = register(node.port, url, deadline)
            print(f"registration {size / reg / 1e6:.0f} MB/s ({reg:.2f} s); the origin read "
                  f"directly {size / direct / 1e6:.0f} MB/s", flush=True)
            path = f"/v2/images/{image_id}/file"
            rounds: list[dict] = []
            for r in range(a.rounds):
                if r and deadline.left() < 60:
                    print("time budget reached; stopping rounds")
                    break
                B.prune_cache(node.port)
                cold = B.pull_verified(node.port, path, size, digest)        # every byte from the origin
                time.sleep(1.0)                                    # the fill keeps them
                warm = B.pull_verified(node.port, path, size, digest)
                origin_s = B.pull_verified(origin.port, "/disk.raw", size)
                row = {"round": r, "cold_seconds": cold, "warm_seconds": warm,
                       "origin_seconds": origin_s, "cold_mbps": size / cold / 1e6,
                       "warm_mbps": size / warm / 1e6, "origin_mbps": size / origin_s / 1e6}
                row["cold_over_warm"] = row["cold_mbps"] / row["warm_mbps"]
                row["cold_over_origin"] = row["cold_mbps"] / row["origin_mbps"]
                rounds.append(row)
                print(f"round {r + 1}: cold {row['cold_mbps']:.0f} MB/s, warm "
                      f"{row['warm_mbps']:.0f} MB/s, origin direct {row['origin_mbps']:.0f} "
                      f"MB/s (cold/warm {row['cold_over_warm']:.2f}, cold/origin "
                      f"{row['cold_over_origin']:.2f})", flush=True)
        finally:
            for p in reversed(procs):
                p.stop()

        med = B.median
        summary = {
            "register_mbps": size / reg / 1e6,
            "register_over_origin": direct / reg,
            "pull_cold_mbps": med([x["cold_mbps"] for x in rounds]),
            "pull_warm_mbps": med([x["warm_mbps"] for x in rounds]),
            "origin_mbps": med([x["origin_mbps"] for x in rounds]),
            "pull_cold_over_warm": med([x["cold_over_warm"] for x in rounds]),
            "pull_cold_over_origin": med([x["cold_over_origin"] for x in rounds]),
        }
        print(f"\n{len(rounds)} interleaved rounds of {a.size_mib} MiB; medians")
        print(json.dumps(summary, indent=2))
        out = B.write_results("location", {
            "size": size, "rounds": len(rounds), "summary": summary, "pulls": rounds,
            "origin": "nginx (sendfile, Range) on loopback",
            "host": {"nproc": os.cpu_count(),
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
