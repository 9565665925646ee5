#!/usr/bin/env python3
# Where a tessera node spends its time under one workload: starts a node, runs the workload
# (upload / pull / image / list20) while py-spy samples the node, and prints the hottest
# frames (self and inclusive, share of samples). Needs py-spy (`pip install py-spy`).
# Every process started here is stopped by its pid; temp data is removed unless --keep.
#
#   python bench/profile.py pull [--size-mib 512] [--seconds 8] [--raw OUT.txt]
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402


def summarize(raw: Path, top: int, idle: bool) -> None:
    self_c: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        total += int(n)
        self_c[frames[-1]] += int(n)
        for f in set(frames[1:] if frames[0].startswith("thread") else frames):
            incl[f] += int(n)
    print(f"{total} samples{' (idle included)' if idle else ''}\n-- self")
    for f, n in self_c.most_common(top):
        print(f"  {n / total:6.1%}  {f}")
    print("-- inclusive")
    for f, n in incl.most_common(top):
        print(f"  {n / total:6.1%}  {f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("workload", choices=("upload", "pull", "image", "list20"))
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rate", type=int, default=250)
    ap.add_argument("--idle", action="store_true", help="keep idle samples (waits)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--raw", type=Path, help="also keep py-spy's raw output here")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    spy_exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy_exe).exists():
        sys.exit("py-spy is not installed (pip install py-spy)")
    size = a.size_mib * B.MiB
    with B.workspace("tessera-profile-", a.keep, a.tmp) as base:
        raw = a.raw or base / "spy.txt"
        data_dir = base / "data"
        payload = base / "payload.bin"
        if a.workload in ("upload", "pull"):
            B.make_payload(payload, size)
        if a.workload in ("image", "list20"):
            import api
            api.populate(data_dir, 0, a.images)
        node = B.start_tessera(base / "node", python=a.python, data_dir=data_dir)
        spy = None
        try:
            image_id = None
            if a.workload == "pull":
                image_id = B.create_image(node.port, "profile")
                B.put_file(node.port, f"/v2/images/{image_id}/file", payload)
            cmd = [spy_exe, "record", "-p", str(node.pid), "-o", str(raw), "-f", "raw",
                   "-r", str(a.rate), "--threads"] + (["--idle"] if a.idle else [])
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            cpu0 = B.cpu_seconds(node.pid)
            if a.workload == "upload":
                image_id = B.create_image(node.port, "profile")
                status, secs, _ = B.put_file(node.port, f"/v2/images/{image_id}/file", payload)
                print(f"upload -> {status}: {size / secs / 1e9:.3f} GB/s")
                done = size
            elif a.workload == "pull":
                t_end, done = time.monotonic() + a.seconds, 0
                while time.monotonic() < t_end:
                    r = B.run_reader(node.port, f"/v2/images/{image_id}/file", 1)
                    done += r["bytes"]
                    print(f"pull {r['gbps']:.2f} GB/s")
            else:
                import api
                st, page = B.http_json(node.port, "GET", "/v2/images?limit=200")
                paths = ([f"/v2/images/{i['id']}" for i in page["images"]]
                         if a.workload == "image" else ["/v2/images?limit=20"])
                r = api.run_wrk(node.port, paths, a.seconds, 32, 2, base)
                print(f"{a.workload}: {r['rps']:.0f} req/s p50 {r['p50']} p99 {r['p99']}")
                done = r["rps"] * a.seconds
            cpu = B.cpu_seconds(node.pid) - cpu0
            unit = "s/GiB" if a.workload in ("upload", "pull") else "us/req"
            per = cpu / (done / B.GiB) if unit == "s/GiB" else cpu / done * 1e6
            print(f"node CPU: {per:.3f} {unit}")
        finally:
            if spy is not None:
                spy.send_signal(2)
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    spy.kill()
            node.stop()
        if raw.exists():
            summarize(raw, a.top, a.idle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
