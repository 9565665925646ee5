# The reaper (grace period, shared chunks, compaction under a reader) and the cache pruner
# (budget under churn, LRU order, store chunks untouched), on real LMDB and files.
import os
import random
import time
import uuid

import pytest

from tessera.engine.chunkstore import ChunkStore, open_index
from tessera.engine.config import EngineConfig
from tessera.engine.errors import Unavailable
from tessera.engine.fsck import run_fsck
from tessera.engine.pruner import Pruner
from tessera.engine.reaper import Reaper

MiB = 1 << 20


@pytest.fixture
async def opened(tmp_path):
    cfg = EngineConfig(data_dir=tmp_path / "data", durable=False, segment_size=MiB,
                       compact_below=0.9, cache_budget=3 * MiB)
    index = open_index(cfg)
    store = ChunkStore.open(cfg, index)
    yield cfg, index, store
    store.close()
    index.close()


async def pieces(data, size=MiB):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def put(store, data):
    ingested = await store.ingest(pieces(data), expected_size=len(data), size_cap=1 << 40)
    image_id = str(uuid.uuid4())
    await store.index.writer.run(lambda txn: ingested.commit(txn, image_id))
    return image_id


async def drop(store, image_id):
    await store.index.writer.run(lambda txn: store.release(txn, image_id))


async def read(store, image_id):
    out = bytearray()
    async for view in store.read(image_id):
        out += view
    return bytes(out)


def fsck_clean(cfg, index):
    report = run_fsck(cfg, index=index)
    assert report.ok and not report.warnings, report.render()


async def test_unreferenced_chunks_survive_the_grace_period(opened):
    cfg, index, store = opened
    image_id = await put(store, os.urandom(2 * MiB))
    await drop(store, image_id)
    reaper = Reaper(store)
    now = time.time()
    early = await reaper.run_once(now=now + cfg.reaper_grace - 60)
    assert early.dropped_chunks == 0 and store.stats()["chunks"] > 0
    late = await reaper.run_once(now=now + cfg.reaper_grace + 60)
    assert late.dropped_chunks > 0 and store.stats()["chunks"] == 0
    assert store.stats()["segment_bytes"] == 0
    fsck_clean(cfg, index)


async def test_shared_chunks_stay_while_referenced(opened):
    cfg, index, store = opened
    shared = os.urandom(3 * MiB)
    first = await put(store, os.urandom(MiB) + shared)
    second_data = shared + os.urandom(MiB)
    second = await put(store, second_data)
    await drop(store, first)
    result = await Reaper(store).run_once(grace=0)
    assert result.dropped_chunks > 0
    assert await read(store, second) == second_data
    fsck_clean(cfg, index)


async def test_compaction_moves_live_chunks_under_a_running_reader(opened):
    cfg, index, store = opened
    rng = random.Random(4)
    keep = [rng.randbytes(400_000) for _ in range(6)]
    junk = [rng.randbytes(400_000) for _ in range(6)]
    mixed = b"".join(k + j for k, j in zip(keep, junk))
    kept_data = b"".join(keep)
    kept = await put(store, kept_data)               # its chunks land first...
    await drop(store, kept)
    await Reaper(store).run_once(grace=0)
    mixed_id = await put(store, mixed)               # ...then interleaved with junk
    kept = await put(store, kept_data)
    await drop(store, mixed_id)
    before = store.stats()["segment_bytes"]
    reader = store.read(kept)
    got = bytearray(await reader.__anext__())        # a reader holds the old mappings
    result = await Reaper(store).run_once(grace=0)
    async for view in reader:
        got += view
    assert bytes(got) == kept_data
    assert result.compacted_segments > 0 and result.moved_chunks > 0
    assert store.stats()["segment_bytes"] < before
    assert await read(store, kept) == kept_data
    fsck_clean(cfg, index)
    store.close()                                    # and it all survives a reopen
    store2 = ChunkStore.open(cfg, index)
    try:
        assert await read(store2, kept) == kept_data
    finally:
        store2.close()
    fsck_clean(cfg, index)


async def mark_cache(store, image_id, now):
    ids = store.image_chunks(image_id)
    await store.index.writer.run(lambda txn: store.mark_cache(txn, ids, now=now))


async def test_pruner_evicts_least_recently_used_cache_chunks_only(opened):
    cfg, index, store = opened
    kept = os.urandom(2 * MiB)
    stored = await put(store, kept)                  # residency store: never evicted
    images = [await put(store, os.urandom(MiB + 1000 * i)) for i in range(3)]
    for n, image_id in enumerate(images):
        await mark_cache(store, image_id, now=1000 + n)
    store.record_access(store.image_chunks(images[0]), now=5000)   # image 0 is hot again
    result = await Pruner(store, budget=2 * MiB + 5000).run_once()
    assert result.cache_bytes <= 2 * MiB + 5000
    assert await read(store, images[0])
    assert await read(store, images[2])
    with pytest.raises(Unavailable):
        await read(store, images[1])                 # the least recently used went
    assert await read(store, stored) == kept
    await Pruner(store, budget=0).run_once()
    assert store.stats()["cache_bytes"] == 0
    assert await read(store, stored) == kept
    assert run_fsck(cfg, index=index).ok


async def test_cache_budget_holds_under_churn(opened):
    cfg, index, store = opened
    rng = random.Random(8)
    pruner = Pruner(store)
    cached = []
    for round_ in range(8):
        image_id = await put(store, rng.randbytes(rng.randrange(MiB // 2, 2 * MiB)))
        await mark_cache(store, image_id, now=time.time())
        cached.append(image_id)
        for other in rng.sample(cached, min(2, len(cached))):
            try:
                await read(store, other)
            except Unavailable:
                pass
        if rng.random() < 0.3:
            await drop(store, cached.pop(0))
        result = await pruner.run_once()
        assert result.cache_bytes <= cfg.cache_budget
        assert store.stats()["cache_bytes"] == result.cache_bytes
    await Reaper(store).run_once(grace=0)
    report = run_fsck(cfg, index=index)
    assert report.ok, report.render()


async def test_small_live_segments_are_not_rewritten_on_every_run(opened):
    cfg, index, store = opened
    tiny = await put(store, b"tiny image")
    reaper = Reaper(store)
    for _ in range(3):
        result = await reaper.run_once(grace=0)
        assert result.compacted_segments == 0
    assert await read(store, tiny) == b"tiny image"
