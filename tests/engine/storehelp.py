# Chunk-store helpers shared by the read-path tests (tests/engine, tests/http): a real chunk
# store on real LMDB and segment files under tmp_path, an image ingested into it, a byte
# flipped on disk inside one chunk's stored bytes, and chunks made to look verified long ago
# (reads verify only those: trust_verified_for).
# Invariants: loaded by path with importlib (tests have no packages); nothing here mocks
# the store; the `store` fixture closes what it opens.
from __future__ import annotations

import os
import uuid

import pytest
import trio

from tessera.engine.chunkstore import ChunkStore, open_index
from tessera.engine.config import EngineConfig

MiB = 1 << 20


@pytest.fixture
async def store(tmp_path):
    """A chunk store (8 MiB segments, durable=False) under tmp_path/data."""
    cfg = EngineConfig(data_dir=tmp_path / "data", durable=False, segment_size=8 * MiB)
    index = open_index(cfg)
    s = ChunkStore.open(cfg, index)
    yield s
    s.close()
    index.close()


async def put(store, data):
    """`data` ingested in 1 MiB pieces and committed as a new image; its id."""
    async def pieces():
        view = memoryview(data)
        for i in range(0, len(view), MiB):
            yield view[i:i + MiB]
            await trio.lowlevel.checkpoint()
    ingested = await store.ingest(pieces(), expected_size=len(data), size_cap=1 << 40)
    image_id = str(uuid.uuid4())
    await store.index.writer.run(lambda txn: ingested.commit(txn, image_id))
    return image_id


def flip_byte(store, entry, at: int, mask: int) -> None:
    """XOR `mask` into byte `at` of the chunk stored at `entry` (an index entry), on disk."""
    path = store.cfg.segments_dir / f"{entry.segment:08d}.seg"
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, entry.offset + at)
        os.pwrite(fd, bytes([old[0] ^ mask]), entry.offset + at)
    finally:
        os.close(fd)


async def make_stale(store, cids) -> None:
    """Make the chunks look last verified before the trust window, so reads verify them."""
    age = int((store.cfg.trust_verified_for + 60) * 1000)

    def work(txn):
        for cid in cids:
            entry = store.db.get(txn, cid)
            entry.verified_at -= age
            store.db.put(txn, cid, entry)
    await store.index.writer.run(work)
    store.runs.invalidate()          # times only ever move forward outside tests
