# The chunk store end to end on real LMDB and real files: round trips, ranges, dedup,
# concurrency, corruption and failed uploads.
import hashlib
import importlib.util
import os
import random
import uuid
from pathlib import Path

import blake3
import pytest
import trio

from tessera.engine.chunkstore import ChunkStore, open_index
from tessera.engine.config import EngineConfig
from tessera.engine.errors import CorruptData, InvalidInput, StorageFull, StoreMismatch, TooLarge
from tessera.engine.fsck import run_fsck
from tessera.engine.index import pack
from tessera.engine.reaper import Reaper

MiB = 1 << 20

_spec = importlib.util.spec_from_file_location(
    "tessera_tests_storehelp", Path(__file__).parents[1] / "engine" / "storehelp.py")
_help = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_help)
flip_byte, make_stale = _help.flip_byte, _help.make_stale


def config(tmp_path, **kw):
    return EngineConfig(data_dir=tmp_path / "data", durable=False, segment_size=8 * MiB, **kw)


@pytest.fixture
async def opened(tmp_path):
    cfg = config(tmp_path)
    index = open_index(cfg)
    store = ChunkStore.open(cfg, index)
    yield cfg, index, store
    store.close()
    index.close()


@pytest.fixture
def store(opened):
    return opened[2]


async def pieces(data, size=MiB):
    view = memoryview(data)
    for i in range(0, len(view), size):
        yield view[i:i + size]
        await trio.lowlevel.checkpoint()


async def generated(seed: bytes, size: int, piece=MiB):
    """`size` pseudo-random bytes without holding them (BLAKE3 XOF)."""
    for pos in range(0, size, piece):
        yield blake3.blake3(seed).digest(length=min(piece, size - pos), seek=pos)


async def put(store, data, piece=MiB):
    ingested = await store.ingest(pieces(data, piece), expected_size=len(data), size_cap=1 << 40)
    image_id = str(uuid.uuid4())
    await store.index.writer.run(lambda txn: ingested.commit(txn, image_id))
    return image_id, ingested


async def read(store, image_id, start=0, end=None):
    out = bytearray()
    async for view in store.read(image_id, start, end):
        out += view
    return bytes(out)


def sparse(rng, size):
    data = bytearray(size)
    pos = 0
    while pos < size:
        n = rng.choice([4096, 70_000, 300_000, MiB])
        if rng.random() < 0.5:
            data[pos:pos + n] = rng.randbytes(min(n, size - pos))
        pos += n + rng.choice([0, 4096, 65536, 2 * MiB])
    return bytes(data[:size])


SIZES = [0, 1, 4095, 16 * 1024 - 1, 16 * 1024, 64 * 1024, 256 * 1024, 256 * 1024 + 1,
         4 * MiB - 1, 4 * MiB, 4 * MiB + 1]


@pytest.mark.parametrize("size", SIZES)
async def test_round_trip_on_and_around_boundaries(store, size):
    data = random.Random(size).randbytes(size)
    image_id, ingested = await put(store, data, piece=7777)
    assert await read(store, image_id) == data
    assert ingested.size == size
    assert ingested.md5 == hashlib.md5(data).hexdigest()
    assert ingested.sha512 == hashlib.sha512(data).hexdigest()
    assert ingested.blake3 == blake3.blake3(data).hexdigest()


async def test_sparse_image_round_trip_and_ranges(store):
    rng = random.Random(5)
    data = sparse(rng, 12 * MiB + 333)
    image_id, ingested = await put(store, data)
    assert ingested.zero_bytes > 2 * MiB
    assert ingested.new_bytes < len(data) - ingested.zero_bytes + 1
    assert await read(store, image_id) == data
    for _ in range(30):
        a = rng.randrange(len(data))
        b = rng.randrange(a, min(len(data), a + rng.choice([1, 5000, 3 * MiB])) + 1)
        assert await read(store, image_id, a, b) == data[a:b]
    assert await read(store, image_id, len(data), len(data)) == b""
    with pytest.raises(InvalidInput):
        store.read(image_id, 10, len(data) + 1)


async def test_views_are_coalesced_and_zero_copy(store):
    data = os.urandom(6 * MiB) + bytes(3 * MiB)
    image_id, _ = await put(store, data)
    views = [v async for v in store.read(image_id)]
    assert all(v.readonly for v in views)
    assert max(len(v) for v in views) > 1 * MiB      # many chunks in one view
    assert len(views) < 20


async def test_zero_extents_are_never_stored(store):
    data = bytes(20 * MiB) + b"tail"
    image_id, ingested = await put(store, data)
    assert ingested.new_bytes == 4
    assert store.stats()["stored_bytes"] == 4
    assert await read(store, image_id) == data


async def test_the_same_200_mib_twice_is_stored_once(store):
    size = 200 * MiB
    first = await store.ingest(generated(b"same", size), expected_size=size, size_cap=1 << 40)
    await store.index.writer.run(lambda txn: first.commit(txn, str(uuid.uuid4())))
    second = await store.ingest(generated(b"same", size, piece=123_457), expected_size=size,
                                size_cap=1 << 40)
    await store.index.writer.run(lambda txn: second.commit(txn, str(uuid.uuid4())))
    assert first.md5 == second.md5
    assert second.new_bytes == 0
    stats = store.stats()
    assert stats["logical_bytes"] == 2 * size
    assert size <= stats["stored_bytes"] <= size + 4096


async def test_a_shared_section_at_different_offsets_is_stored_once(store):
    rng = random.Random(9)
    section = rng.randbytes(50 * MiB)
    a = rng.randbytes(3 * MiB) + section + rng.randbytes(MiB)
    b = rng.randbytes(7 * MiB + 12345) + section + rng.randbytes(2 * MiB)
    await put(store, a)
    _, second = await put(store, b)
    own = 9 * MiB + 12345
    shared_share = 1 - (second.new_bytes - own) / len(section)
    assert shared_share >= 0.9


async def test_concurrent_ingests_share_chunks_and_refcounts_stay_exact(opened):
    cfg, index, store = opened
    rng = random.Random(2)
    common = rng.randbytes(3 * MiB)
    images = [common + rng.randbytes(MiB) + common[: (i + 1) * 100_000] for i in range(8)]
    done = {}

    async def one(i):
        done[i] = await put(store, images[i], piece=100_000 + i)

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(one, i)
    for i, (image_id, _) in done.items():
        assert await read(store, image_id) == images[i]
    written = sum(ing.new_bytes for _, ing in done.values())
    assert written < 3 * MiB + 8 * MiB + 8 * 800_000 + 2 * MiB   # common stored ~once
    report = run_fsck(cfg, index=index)
    assert report.ok and not report.warnings, report.render()
    for image_id, _ in list(done.values())[:4]:
        await index.writer.run(lambda txn, i=image_id: store.release(txn, i))
    report = run_fsck(cfg, index=index)
    assert report.ok and not report.warnings, report.render()
    for image_id, _ in list(done.values())[4:]:
        await index.writer.run(lambda txn, i=image_id: store.release(txn, i))
    assert store.stats()["unreferenced_chunks"] == store.stats()["chunks"]
    result = await Reaper(store).run_once(grace=0)
    assert result.dropped_chunks > 0
    stats = store.stats()
    assert stats["chunks"] == 0 and stats["segment_bytes"] == 0
    assert store.segments.total_bytes == 0
    assert run_fsck(cfg, index=index).ok


async def assert_flip_detected(cfg, index, store, image_id, data, entry):
    got = bytearray()
    with pytest.raises(CorruptData):
        async for view in store.read(image_id):
            got += view
    assert data.startswith(got)                     # only verified bytes came out
    pos = data.find(bytes(store.segments.view(entry.segment, entry.offset, 50)))
    assert len(got) <= pos
    report = run_fsck(cfg, index=index)
    assert not report.ok and any("verification" in e for e in report.errors)


async def test_a_flipped_byte_is_detected_and_never_returned_when_every_read_verifies(tmp_path):
    cfg = config(tmp_path, trust_verified_for=0)
    index = open_index(cfg)
    store = ChunkStore.open(cfg, index)
    try:
        data = os.urandom(5 * MiB)
        image_id, _ = await put(store, data)
        cid = store.image_chunks(image_id)[0]
        with index.read() as txn:
            entry = store.db.get(txn, cid)
        flip_byte(store, entry, 100, 0x40)          # just verified at ingest: still caught
        await assert_flip_detected(cfg, index, store, image_id, data, entry)
    finally:
        store.close()
        index.close()


async def test_a_flipped_byte_in_a_chunk_verified_long_ago_is_detected(opened):
    cfg, index, store = opened
    data = os.urandom(5 * MiB)
    image_id, _ = await put(store, data)
    cid = store.image_chunks(image_id)[0]
    await make_stale(store, [cid])
    with index.read() as txn:
        entry = store.db.get(txn, cid)
    flip_byte(store, entry, 100, 0x40)
    await assert_flip_detected(cfg, index, store, image_id, data, entry)


async def test_a_read_verifies_stale_chunks_and_records_when(opened):
    cfg, index, store = opened
    data = os.urandom(3 * MiB)
    image_id, _ = await put(store, data)
    ids = store.image_chunks(image_id)
    await make_stale(store, ids)
    with index.read() as txn:
        before = {cid: store.db.get(txn, cid).verified_at for cid in ids}
    assert await read(store, image_id) == data          # every chunk hashed: all good
    await index.writer.run(store.flush_access)
    with index.read() as txn:
        after = {cid: store.db.get(txn, cid).verified_at for cid in ids}
    assert all(after[cid] >= before[cid] + cfg.trust_verified_for * 1000 for cid in ids)



async def failing(data, at):
    view = memoryview(data)
    for i in range(0, len(view), 65536):
        if i >= at:
            raise ConnectionResetError("client went away")
        yield view[i:i + 65536]


async def assert_clean(cfg, index, store):
    stats = store.stats()
    assert stats["manifests"] == 0 and stats["chunks"] == 0
    assert store.segments.total_bytes == 0          # new bytes were cut off again
    assert not store._pins and not store._inflight
    report = run_fsck(cfg, index=index)
    assert report.ok and not report.warnings, report.render()


async def test_size_mismatch_and_cap_leave_nothing_behind(opened):
    cfg, index, store = opened
    data = os.urandom(6 * MiB)
    with pytest.raises(InvalidInput):
        await store.ingest(pieces(data), expected_size=len(data) + 1, size_cap=1 << 40)
    await assert_clean(cfg, index, store)
    with pytest.raises(InvalidInput):
        await store.ingest(pieces(data), expected_size=len(data) - 1, size_cap=1 << 40)
    await assert_clean(cfg, index, store)
    with pytest.raises(TooLarge):
        await store.ingest(pieces(data), expected_size=None, size_cap=5 * MiB)
    await assert_clean(cfg, index, store)


async def test_disconnect_and_cancellation_propagate_and_leave_nothing(opened):
    cfg, index, store = opened
    data = os.urandom(9 * MiB)
    with pytest.raises(ConnectionResetError):
        await store.ingest(failing(data, 7 * MiB), expected_size=len(data), size_cap=1 << 40)
    await assert_clean(cfg, index, store)

    async def stalls():
        yield data[:6 * MiB]
        await trio.sleep_forever()

    with trio.move_on_after(0.5) as scope:
        await store.ingest(stalls(), expected_size=None, size_cap=1 << 40)
    assert scope.cancelled_caught
    await assert_clean(cfg, index, store)
    image_id, _ = await put(store, data)             # the store still works
    assert await read(store, image_id) == data


async def test_a_full_store_raises_storage_full_and_stays_consistent(tmp_path):
    cfg = config(tmp_path, max_stored_bytes=3 * MiB)
    index = open_index(cfg)
    store = ChunkStore.open(cfg, index)
    try:
        with pytest.raises(StorageFull):
            await store.ingest(pieces(os.urandom(5 * MiB)), expected_size=None,
                               size_cap=1 << 40)
        await assert_clean(cfg, index, store)
        small = os.urandom(MiB)
        image_id, _ = await put(store, small)
        assert await read(store, image_id) == small
    finally:
        store.close()
        index.close()


async def test_abandon_after_ingest_leaves_nothing_referenced(opened):
    cfg, index, store = opened
    ingested = await store.ingest(pieces(os.urandom(3 * MiB)), expected_size=None,
                                  size_cap=1 << 40)
    ingested.abandon()
    ingested.abandon()
    await assert_clean(cfg, index, store)


async def test_reopen_keeps_committed_images(tmp_path):
    cfg = config(tmp_path)
    index = open_index(cfg)
    store = ChunkStore.open(cfg, index)
    data = sparse(random.Random(1), 5 * MiB)
    image_id, _ = await put(store, data)
    store.close()
    index.close()
    index = open_index(cfg)
    store = ChunkStore.open(cfg, index)
    try:
        assert await read(store, image_id) == data
    finally:
        store.close()
        index.close()


async def test_another_chunker_is_refused(tmp_path):
    cfg = config(tmp_path)
    index = open_index(cfg)
    index.writer.run_blocking(lambda txn: txn.put(b"chunker", pack("other-cdc/1"),
                                                  db=index.db("meta")))
    index.close()
    with pytest.raises(StoreMismatch):
        open_index(cfg)
