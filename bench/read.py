# Read benchmark (a script, not a test): reading an image through the chunk store (manifest
# lookup, BLAKE3 verification of every chunk in a worker thread, coalesced zero-copy views)
# against a memcpy of the same number of bytes, measured in the same run, interleaved.
#   python bench/read.py [--size-mib 1024] [--reps 3] [--dir PATH] [--json OUT]
# "views" only iterates the views (what a zero-copy sender costs before the kernel copy);
# "copy" also copies every view into a reused 4 MiB buffer (what the socket copy adds).
# The first read after an O_DIRECT ingest comes from the disk (the page cache holds no copy);
# later reads are warm.
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import trio

from tessera.engine.chunkstore import ChunkStore, open_index
from tessera.engine.config import EngineConfig

MiB = 1 << 20


async def pieces(data, piece=MiB):
    view = memoryview(data)
    for i in range(0, len(view), piece):
        yield view[i:i + piece]


def memcpy_seconds(src: bytearray, dst: bytearray) -> float:
    s, d = memoryview(src), memoryview(dst)
    t = time.perf_counter()
    for i in range(0, len(s), 4 * MiB):
        d[i:i + 4 * MiB] = s[i:i + 4 * MiB]
    return time.perf_counter() - t


async def read_seconds(store, image_id, sink: memoryview | None) -> tuple[float, int, int]:
    t = time.perf_counter()
    total = views = 0
    async for view in store.read(image_id):
        n = len(view)
        if sink is not None:
            sink[:n] = view
        total += n
        views += 1
    return time.perf_counter() - t, total, views


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    size = args.size_mib * MiB
    root = Path(tempfile.mkdtemp(prefix="tessera-bench-", dir=args.dir))
    cfg = EngineConfig(data_dir=root / "data", durable=False)
    index = open_index(cfg)
    store = ChunkStore.open(cfg, index)
    results: dict = {"size_bytes": size}
    try:
        data = bytearray(os.urandom(size))
        ingested = await store.ingest(pieces(data), expected_size=size, size_cap=1 << 42)
        image_id = str(uuid.uuid4())
        await index.writer.run(lambda txn: ingested.commit(txn, image_id))
        dst = bytearray(size)
        memcpy_seconds(data, dst)                       # touch the destination once
        sink = memoryview(bytearray(8 * MiB))
        first, total, nviews = await read_seconds(store, image_id, None)
        assert total == size
        base = memcpy_seconds(data, dst)
        results["first_read_ratio_vs_memcpy"] = base / first
        print(f"first read (from disk): {size / first / 1e9:.2f} GB/s, "
              f"{base / first:.2f}x memcpy ({size / base / 1e9:.1f} GB/s); "
              f"{nviews} views, mean {size / nviews / MiB:.2f} MiB", flush=True)
        for mode, target in (("views", None), ("copy", sink)):
            ratios, secs = [], []
            for _ in range(args.reps):
                b = memcpy_seconds(data, dst)
                s, total, _ = await read_seconds(store, image_id, target)
                assert total == size
                ratios.append(b / s)
                secs.append(s)
            results[mode] = {"ratio_vs_memcpy": statistics.median(ratios), "ratios": ratios,
                             "gb_per_s": size / statistics.median(secs) / 1e9}
            print(f"warm read, {mode:>5}: {size / statistics.median(secs) / 1e9:.2f} GB/s, "
                  f"{statistics.median(ratios):.2f}x memcpy "
                  f"(runs {', '.join(f'{r:.2f}' for r in ratios)})", flush=True)
        results["views"]["count"] = nviews
    finally:
        store.close()
        index.close()
        shutil.rmtree(root, ignore_errors=True)
    line = json.dumps(results, sort_keys=True)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    trio.run(main)
