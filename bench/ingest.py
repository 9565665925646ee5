# Ingest benchmark (a script, not a test): the engine's ingest path against the floor of
# hashing the same bytes with MD5 then SHA-512 (Glance's checksum pair) in one thread,
# measured in the same run, interleaved, so host drift cancels out in the ratios.
#   python bench/ingest.py [--size-mib 1024] [--reps 3] [--rss-gib 4] [--dir PATH] [--json OUT]
# Figures: fresh ingest of random bytes, of a sparse VM-like image, re-ingest of an
# identical image (all chunks known), and peak RSS (VmHWM) of a fresh process ingesting a large image.
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

from tessera.engine.chunkstore import ChunkStore, open_index
from tessera.engine.config import EngineConfig

MiB = 1 << 20


def sparse_image(size: int, seed: int = 1) -> bytearray:
    """A VM-like disk: ~20% data in runs of 4 KiB..8 MiB, the rest zeros."""
    rng = random.Random(seed)
    data = bytearray(size)
    pos = 0
    while pos < size:
        n = min(rng.choice([4096, 65536, MiB, 4 * MiB, 8 * MiB]), size - pos)
        data[pos:pos + n] = os.urandom(n)
        pos += n + rng.choice([0, 4096, 2 * MiB, 16 * MiB, 32 * MiB])
    return data


async def pieces(data, piece=MiB):
    view = memoryview(data)
    for i in range(0, len(view), piece):
        yield view[i:i + piece]


def floor_seconds(data) -> tuple[float, float]:
    """(wall, CPU) seconds of MD5 then SHA-512 over `data` in one thread."""
    t, c = time.perf_counter(), time.process_time()
    hashlib.md5(data).digest()
    hashlib.sha512(data).digest()
    return time.perf_counter() - t, time.process_time() - c


async def ingest_seconds(root: Path, data, *, store_state=None, durable=True):
    """Seconds to ingest and commit `data` into a fresh store (or `store_state`)."""
    own = store_state is None
    if own:
        cfg = EngineConfig(data_dir=Path(tempfile.mkdtemp(dir=root)), durable=durable)
        index = open_index(cfg)
        store = ChunkStore.open(cfg, index)
    else:
        cfg, index, store = store_state
    t, c = time.perf_counter(), time.process_time()
    ingested = await store.ingest(pieces(data), expected_size=len(data), size_cap=1 << 42)
    image_id = str(uuid.uuid4())
    await index.writer.run(lambda txn: ingested.commit(txn, image_id))
    seconds = (time.perf_counter() - t, time.process_time() - c)
    if own:
        store.close()
        index.close()
        shutil.rmtree(cfg.data_dir)
    return seconds, ingested


RSS_CHILD = r'''
import sys, time, uuid, tempfile
from pathlib import Path
import blake3, trio
from tessera.engine.chunkstore import ChunkStore, open_index
from tessera.engine.config import EngineConfig

size = int(sys.argv[1]); root = sys.argv[2]

def hwm():
    """Peak RSS of this process in bytes (VmHWM; ru_maxrss would carry the parent's peak
    across fork+exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

async def gen():
    piece = 1 << 20
    buf = bytearray(piece)
    for pos in range(0, size, piece):
        # pseudo-random pieces; every 4th MiB is zeros (sparse areas)
        if (pos // piece) % 4 == 3:
            yield bytes(piece)
        else:
            yield blake3.blake3(b"rss").digest(length=piece, seek=pos)

async def main():
    cfg = EngineConfig(data_dir=Path(tempfile.mkdtemp(dir=root)), durable=True)
    index = open_index(cfg); store = ChunkStore.open(cfg, index)
    before = hwm()
    t = time.perf_counter()
    ing = await store.ingest(gen(), expected_size=size, size_cap=1 << 42)
    await index.writer.run(lambda txn: ing.commit(txn, str(uuid.uuid4())))
    dt = time.perf_counter() - t
    peak = hwm()
    print(before, peak, dt, cfg.data_dir)

trio.run(main)
'''


def peak_rss(size: int, root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(size), str(root)],
                         capture_output=True, text=True, check=True).stdout.split()
    before, peak, seconds, data_dir = int(out[0]), int(out[1]), float(out[2]), out[3]
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"size_bytes": size, "rss_before_ingest_mb": before / 1e6,
            "peak_rss_mb": peak / 1e6, "seconds": seconds, "gb_per_s": size / seconds / 1e9}


def summarize(name: str, size: int, runs: list, **extra) -> dict:
    """Median ratios floor/ingest of wall time and of CPU time (all threads)."""
    wall = [f[0] / s[0] for f, s in runs]
    cpu = [f[1] / s[1] for f, s in runs]
    speed = size / statistics.median(s[0] for _, s in runs) / 1e9
    print(f"{name:>8}: ingest/floor wall = {statistics.median(wall):.2f} "
          f"(runs {', '.join(f'{r:.2f}' for r in wall)}), CPU = {statistics.median(cpu):.2f}; "
          f"{speed:.3f} GB/s", flush=True)
    return {"ratio_vs_md5_sha512_floor": statistics.median(wall), "ratios": wall,
            "cpu_ratio": statistics.median(cpu), "cpu_ratios": cpu, "ingest_gb_per_s": speed,
            **extra}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rss-gib", type=float, default=4)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tessera-bench-", dir=args.dir))
    size = args.size_mib * MiB
    results: dict = {"size_bytes": size, "reps": args.reps}
    try:
        random_data = bytearray(os.urandom(size))
        sparse = sparse_image(size)
        for name, data in (("random", random_data), ("sparse", sparse)):
            runs = []
            for _ in range(args.reps):
                f = floor_seconds(data)
                s, ing = await ingest_seconds(root, data)
                runs.append((f, s))
            results[name] = summarize(name, size, runs, zero_bytes=ing.zero_bytes,
                                      new_bytes=ing.new_bytes)
        # re-ingest of an identical image into the same store
        cfg = EngineConfig(data_dir=Path(tempfile.mkdtemp(dir=root)), durable=True)
        index = open_index(cfg)
        store = ChunkStore.open(cfg, index)
        await ingest_seconds(root, random_data, store_state=(cfg, index, store))
        runs = []
        for _ in range(args.reps):
            f = floor_seconds(random_data)
            s, ing = await ingest_seconds(root, random_data, store_state=(cfg, index, store))
            runs.append((f, s))
            assert ing.new_bytes == 0
        store.close()
        index.close()
        shutil.rmtree(cfg.data_dir)
        results["reingest"] = summarize("reingest", size, runs, new_bytes=0)
        del random_data, sparse
        if args.rss_gib:
            rss = peak_rss(int(args.rss_gib * (1 << 30)), root)
            results["rss"] = rss
            print(f"     rss: ingest of {args.rss_gib:g} GiB, peak RSS {rss['peak_rss_mb']:.0f} MB "
                  f"(before ingest {rss['rss_before_ingest_mb']:.0f} MB), "
                  f"{rss['gb_per_s']:.3f} GB/s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    line = json.dumps(results, sort_keys=True)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    trio.run(main)
