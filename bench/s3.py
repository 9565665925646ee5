#!/usr/bin/env python3
# S3 durable tier benchmark: a tessera node with a local default store "main" and an s3 store
# "obj" on a real Ceph radosgw (started here on 127.0.0.1 by tests/objstore/ceph/start.sh, or
# OBJSTORE_S3_ENDPOINT + AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when set), in the same run:
# - upload throughput over HTTP to the s3 store vs to the local store (the same fresh bytes
#   to each, per round; the ratio is the figure), and pack objects written per GiB;
# - cold pull of the s3 image (the node's local copies evicted: every byte comes back with
#   ranged GETs) vs warm pull of the same image (its chunks in the local cache again) and vs
#   a pull of the same bytes from the local store; ratios cold/warm and cold/local.
# Rounds are interleaved. Every process started here is stopped by its pid; temp data is
# removed unless --keep; results go to bench/results/s3-<stamp>.json.
#
#   python bench/s3.py [--size-mib 512] [--rounds 2]
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

CEPH = Path(__file__).resolve().parent.parent / "tests" / "objstore" / "ceph"
ACCESS, SECRET = "bench-access", "bench-secret"


class Ceph:
    """A throw-away Ceph started by the test suite's script; stop() kills its pids."""

    def __init__(self, base: Path, gib: int) -> None:
        self.base = base / "ceph"
        rgw, mon = B.free_port(), _free_pair()
        env = dict(os.environ, OBJSTORE_CEPH_DIR=str(self.base), CEPH_RGW_PORT=str(rgw),
                   CEPH_MON_PORT=str(mon), CEPH_S3_ACCESS_KEY=ACCESS, CEPH_S3_SECRET_KEY=SECRET,
                   CEPH_STORE_GIB=str(gib))
        t = time.perf_counter()
        run = subprocess.run(["bash", str(CEPH / "start.sh")], env=env, capture_output=True,
                             text=True, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"Ceph did not start:\n{(run.stderr + run.stdout)[-3000:]}")
        self.endpoint = f"http://127.0.0.1:{rgw}"
        print(f"ceph radosgw at {self.endpoint} ready in {time.perf_counter() - t:.1f}s")

    def stop(self) -> None:
        subprocess.run(["bash", str(CEPH / "stop.sh")], capture_output=True, timeout=60,
                       env=dict(os.environ, OBJSTORE_CEPH_DIR=str(self.base),
                                CEPH_STOP_FAST="1"))


def _free_pair() -> int:
    for _ in range(100):
        p = B.free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def s3_client(endpoint: str, access: str, secret: str, region: str):
    import boto3.session
    from botocore.config import Config

    return boto3.session.Session(aws_access_key_id=access, aws_secret_access_key=secret,
                                 region_name=region).client(
        "s3", endpoint_url=endpoint, config=Config(
            signature_version="s3v4", s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required"))


def count_objects(s3, bucket: str) -> tuple[int, int]:
    n = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", ()):
            n += 1
            size += o["Size"]
    return n, size


def put_to_store(port: int, image_id: str, file: Path, store: str) -> float:
    """PUT the file (sendfile) into `store`; seconds from the first byte to the response."""
    status, seconds, resp = B.put_file(port, f"/v2/images/{image_id}/file", file,
                                       headers={"X-Image-Meta-Store": store})
    if status != 204:
        raise RuntimeError(f"upload to {store} -> {status}: {resp[:500]!r}")
    return seconds


def pull(port: int, image_id: str, size: int, digest: str | None = None) -> float:
    return B.pull_verified(port, f"/v2/images/{image_id}/file", size, digest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs tessera")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    size = a.size_mib * B.MiB
    deadline = B.Deadline(a.max_seconds)
    procs: list = []
    with B.workspace("tessera-bench-s3-", a.keep, a.tmp) as base:
        try:
            env = os.environ
            if env.get("OBJSTORE_S3_ENDPOINT"):
                endpoint = env["OBJSTORE_S3_ENDPOINT"]
                access, secret = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
                region = env.get("AWS_DEFAULT_REGION") or "us-east-1"
            else:
                ceph = Ceph(base, gib=max(4, 2 + 3 * a.rounds * a.size_mib // 1024))
                procs.append(ceph)
                endpoint, access, secret, region = ceph.endpoint, ACCESS, SECRET, "us-east-1"
            s3 = s3_client(endpoint, access, secret, region)
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(Bucket=bucket)
            creds = base / "credentials"
            creds.write_text(f"[default]\naws_access_key_id = {access}\n"
                             f"aws_secret_access_key = {secret}\n")
            config = "\n".join([
                "[engine]", "image_cache = true", "cache_budget = 0", "",
                "[[stores]]", 'id = "main"', "default = true", "",
                "[[stores]]", 'id = "obj"', 'type = "s3"', f'endpoint = "{endpoint}"',
                f'bucket = "{bucket}"', f'region = "{region}"',
                f'credentials_file = "{creds}"', ""])
            node = B.start_tessera(base / "node", python=a.python, config_text=config)
            procs.append(node)

            uploads: list[dict] = []
            pulls: list[dict] = []
            for r in range(a.rounds):
                if r and deadline.left() < 120:
                    print("time budget reached; stopping rounds")
                    break
                payload = base / f"payload-{r}.bin"
                B.make_payload(payload, size, seed=f"tessera-bench-s3-{r}".encode())
                digest = B.file_blake3(payload)
                order = ["obj", "main"] if r % 2 == 0 else ["main", "obj"]
                ids, secs = {}, {}
                for store in order:
                    ids[store] = B.create_image(node.port, f"bench-s3-{r}-{store}")
                    before = count_objects(s3, bucket)
                    secs[store] = put_to_store(node.port, ids[store], payload, store)
                    after = count_objects(s3, bucket)
                    if store == "obj":
                        objects, obj_bytes = after[0] - before[0], after[1] - before[1]
                upload = {"round": r, "s3_seconds": secs["obj"], "local_seconds": secs["main"],
                          "s3_mbps": size / secs["obj"] / 1e6,
                          "local_mbps": size / secs["main"] / 1e6,
                          "ratio": secs["main"] / secs["obj"],
                          "objects_written": objects, "object_bytes": obj_bytes,
                          "objects_per_gib": objects / (size / B.GiB)}
                uploads.append(upload)
                print(f"round {r + 1}: upload s3 {upload['s3_mbps']:.0f} MB/s, local "
                      f"{upload['local_mbps']:.0f} MB/s (ratio {upload['ratio']:.2f}); "
                      f"{objects} objects = {upload['objects_per_gib']:.1f} per GiB, "
                      f"{obj_bytes / size:.3f} bytes stored per byte")
                payload.unlink()

                B.prune_cache(node.port)
                cold = pull(node.port, ids["obj"], size, digest)     # every byte from radosgw
                time.sleep(1.0)                                      # the fill keeps them
                warm = pull(node.port, ids["obj"], size, digest)
                local = pull(node.port, ids["main"], size, digest)
                B.prune_cache(node.port)
                cold2 = pull(node.port, ids["obj"], size)
                row = {"round": r, "cold_seconds": [cold, cold2], "warm_seconds": warm,
                       "local_seconds": local,
                       "cold_mbps": size / B.median([cold, cold2]) / 1e6,
                       "warm_mbps": size / warm / 1e6, "local_mbps": size / local / 1e6}
                row["cold_over_warm"] = row["cold_mbps"] / row["warm_mbps"]
                row["cold_over_local"] = row["cold_mbps"] / row["local_mbps"]
                pulls.append(row)
                print(f"round {r + 1}: pull cold {row['cold_mbps']:.0f} MB/s, warm "
                      f"{row['warm_mbps']:.0f} MB/s, local store {row['local_mbps']:.0f} MB/s "
                      f"(cold/warm {row['cold_over_warm']:.2f}, cold/local "
                      f"{row['cold_over_local']:.2f})")
        finally:
            for p in reversed(procs):
                p.stop()

        med = B.median
        summary = {
            "upload_s3_mbps": med([u["s3_mbps"] for u in uploads]),
            "upload_local_mbps": med([u["local_mbps"] for u in uploads]),
            "upload_ratio": med([u["ratio"] for u in uploads]),
            "objects_per_gib": med([u["objects_per_gib"] for u in uploads]),
            "pull_cold_mbps": med([p["cold_mbps"] for p in pulls]),
            "pull_warm_mbps": med([p["warm_mbps"] for p in pulls]),
            "pull_local_mbps": med([p["local_mbps"] for p in pulls]),
            "pull_cold_over_warm": med([p["cold_over_warm"] for p in pulls]),
            "pull_cold_over_local": med([p["cold_over_local"] for p in pulls]),
        }
        print(f"\n{len(uploads)} interleaved rounds of {a.size_mib} MiB; medians")
        print(json.dumps(summary, indent=2))
        out = B.write_results("s3", {
            "size": size, "rounds": len(uploads), "summary": summary, "uploads": uploads,
            "pulls": pulls, "object_store": "external" if env.get("OBJSTORE_S3_ENDPOINT")
            else "ceph radosgw (memstore, loopback)",
            "host": {"nproc": os.cpu_count(),
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
