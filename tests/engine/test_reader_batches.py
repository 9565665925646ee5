# The read path's batching: fixed logical batches planned and verified in worker threads
# (chunks straddling batch edges, ranges starting and ending anywhere, zero extents, pages
# of the manifest), in both forms (async iteration; next_batch from a worker thread, also
# after async iteration started) and the release of consumed pages from the process's
# mappings.
import importlib.util
import os
import random
from pathlib import Path

import pytest
import trio

from tessera.engine import manifest, reader
from tessera.engine.errors import CorruptData

MiB = 1 << 20


_spec = importlib.util.spec_from_file_location(
    "tessera_tests_storehelp", Path(__file__).parents[1] / "engine" / "storehelp.py")
_help = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_help)
store, put, flip_byte = _help.store, _help.put, _help.flip_byte      # store: a fixture
make_stale = _help.make_stale


async def read(store, image_id, start=0, end=None):
    out = bytearray()
    async for view in store.read(image_id, start, end):
        out += view
    return bytes(out)


async def test_ranges_across_small_batches_and_pages(store, monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", 100_000)      # not a multiple of anything
    monkeypatch.setattr(reader, "VIEW_CAP", 300_000)
    monkeypatch.setattr(manifest, "PAGE_EXTENTS", 7)          # many manifest pages
    rng = random.Random(7)
    data = os.urandom(3 * MiB) + bytes(MiB) + os.urandom(MiB + 12345)   # a zero extent too
    image_id = await put(store, data)
    assert await read(store, image_id) == data
    for _ in range(25):
        a = rng.randrange(len(data))
        b = rng.randrange(a, len(data) + 1)
        assert await read(store, image_id, a, b) == data[a:b]
    assert await read(store, image_id, len(data), len(data)) == b""


async def test_a_flipped_byte_in_a_later_batch_stops_the_read_before_it(store, monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", 256 * 1024)
    data = os.urandom(4 * MiB)
    image_id = await put(store, data)
    cid = store.image_chunks(image_id)[-1]
    await make_stale(store, [cid])                  # reads verify it (trust window passed)
    with store.index.read() as txn:
        entry = store.db.get(txn, cid)
    flip_byte(store, entry, 1, 1)
    got = bytearray()
    with pytest.raises(CorruptData):
        async for view in store.read(image_id):
            got += view
    assert data.startswith(bytes(got)) and len(got) < len(data)


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    return 0


async def test_consumed_pages_leave_the_process(store):
    data = os.urandom(48 * MiB)
    image_id = await put(store, data)
    before = _rss_file_kib()
    total = 0
    async for view in store.read(image_id):
        total += len(view)
    assert total == len(data)
    # Without the release every page read would stay mapped (48 MiB more).
    assert _rss_file_kib() - before < 24 * 1024


def _batches(r, out: bytearray) -> int:
    """Drain a reader with next_batch (in a worker thread), checking that the views of one
    call are still intact after the next call, as a sender relies on."""
    count = 0
    previous: list = []
    while True:
        snapshot = [bytes(v) for v in previous]
        views = r.next_batch()
        assert [bytes(v) for v in previous] == snapshot
        for v in views:
            out += v
        if not views:
            return count
        count += 1
        previous = views


async def test_next_batch_in_a_worker_thread_gives_the_same_bytes(store, monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", 300_000)
    monkeypatch.setattr(manifest, "PAGE_EXTENTS", 5)
    rng = random.Random(11)
    data = os.urandom(2 * MiB) + bytes(2 * MiB) + os.urandom(MiB + 777)
    image_id = await put(store, data)
    got = bytearray()
    r = reader.ChunkReader(store, image_id, 0, None)
    count = await trio.to_thread.run_sync(_batches, r, got)
    await r.aclose()
    assert bytes(got) == data and count == -(-len(data) // 300_000)
    for _ in range(10):
        a = rng.randrange(len(data))
        b = rng.randrange(a, len(data) + 1)
        got = bytearray()
        r = reader.ChunkReader(store, image_id, a, b)
        await trio.to_thread.run_sync(_batches, r, got)
        await r.aclose()
        assert bytes(got) == data[a:b]


async def test_next_batch_goes_on_where_async_iteration_stopped(store, monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", 200_000)
    monkeypatch.setattr(reader, "VIEW_CAP", 50_000)      # several views per batch
    data = os.urandom(3 * MiB)
    image_id = await put(store, data)
    for taken in (1, 2, 5):
        r = reader.ChunkReader(store, image_id, 1000, len(data) - 1000)
        got = bytearray()
        async for view in r:             # a primed download: a few views, jobs running ahead
            got += view
            taken -= 1
            if not taken:
                break
        await trio.to_thread.run_sync(_batches, r, got)
        await r.aclose()
        assert bytes(got) == data[1000:len(data) - 1000]


async def test_next_batch_stops_at_a_flipped_byte(store, monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", 256 * 1024)
    data = os.urandom(2 * MiB)
    image_id = await put(store, data)
    chunks = store.image_chunks(image_id)
    await make_stale(store, chunks)
    with store.index.read() as txn:
        entry = store.db.get(txn, chunks[len(chunks) // 2])
    flip_byte(store, entry, entry.length - 1, 0x80)
    r = reader.ChunkReader(store, image_id, 0, None)
    got = bytearray()
    with pytest.raises(CorruptData):
        await trio.to_thread.run_sync(_batches, r, got)
    await r.aclose()
    assert data.startswith(bytes(got)) and len(got) < len(data)


async def test_next_batch_drops_consumed_pages(store):
    data = os.urandom(48 * MiB)
    image_id = await put(store, data)
    before = _rss_file_kib()
    r = reader.ChunkReader(store, image_id, 0, None)
    got = bytearray()
    await trio.to_thread.run_sync(_batches, r, got)
    await r.aclose()
    assert len(got) == len(data)
    assert _rss_file_kib() - before < 24 * 1024


def _file_batches(r) -> tuple[bytes, int, int]:
    """Drain with next_batch(files=True): the bytes, and how many file ranges and views."""
    out, ranges, views = bytearray(), 0, 0
    while batch := r.next_batch(files=True):
        for item in batch:
            if isinstance(item, reader.FileRange):
                ranges += 1
                out += item.tobytes()
            else:
                views += 1
                out += item
    return bytes(out), ranges, views


async def test_file_ranges_and_the_trust_window(store, monkeypatch):
    """Trusted chunks come as file ranges without being hashed; stale ones are hashed
    first; zero extents stay views."""
    monkeypatch.setattr(reader, "BATCH_BYTES", 1 * MiB)
    hashed = []
    real = reader.digest
    monkeypatch.setattr(reader, "digest", lambda b: hashed.append(len(b)) or real(b))
    data = os.urandom(2 * MiB) + bytes(MiB) + os.urandom(MiB + 99)
    image_id = await put(store, data)
    for a, b in ((0, len(data)), (12345, 3 * MiB + 7)):
        r = reader.ChunkReader(store, image_id, a, b)
        got, ranges, views = await trio.to_thread.run_sync(_file_batches, r)
        await r.aclose()
        assert got == data[a:b] and ranges > 0 and views > 0
    assert hashed == []                              # verified at ingest a moment ago
    chunks = store.image_chunks(image_id)
    await make_stale(store, chunks[:3])
    r = reader.ChunkReader(store, image_id, 0, None)
    got, _, _ = await trio.to_thread.run_sync(_file_batches, r)
    await r.aclose()
    assert got == data and len(hashed) == 3          # exactly the stale ones


async def test_every_read_verifies_with_no_trust_window(tmp_path, monkeypatch):
    from tessera.engine.chunkstore import ChunkStore, open_index
    from tessera.engine.config import EngineConfig
    cfg = EngineConfig(data_dir=tmp_path / "d", durable=False, segment_size=8 * MiB,
                       trust_verified_for=0)
    index = open_index(cfg)
    s = ChunkStore.open(cfg, index)
    try:
        hashed = []
        real = reader.digest
        monkeypatch.setattr(reader, "digest", lambda b: hashed.append(1) or real(b))
        image_id = await put(s, os.urandom(3 * MiB))
        assert len(await read(s, image_id)) == 3 * MiB
        assert len(hashed) == len(set(s.image_chunks(image_id)))
    finally:
        s.close()
        index.close()
