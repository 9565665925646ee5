# Downloads of images whose chunks this node does not hold, through the chunk source
# contract (engine/chunksource.py): two real engines; node B holds A's image documents but
# none of its chunks, and a source answers from A's chunk store the way a peer, an object
# store or an origin would (raw bytes, possibly a subset, possibly wrong).
import hashlib
import importlib.util
import os
from pathlib import Path

import pytest
import trio

from tessera.engine import chunkput, fillreader
from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.errors import Unavailable
from tessera.engine.reader import ChunkReader

_spec = importlib.util.spec_from_file_location(
    "tessera_tests_storehelp", Path(__file__).parents[1] / "engine" / "storehelp.py")
_help = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_help)
make_stale = _help.make_stale

MiB = 1024 * 1024


class StoreSource:
    """Answers from another engine's chunk store; can hold back, corrupt or fail."""

    def __init__(self, engine, name="a", *, only=None, corrupt=(), fail=False):
        self.name, self.engine = name, engine
        self.only, self.corrupt, self.fail = only, set(corrupt), fail
        self.asked: list[bytes] = []
        self.rejects: list[bytes] = []

    async def fetch(self, image, wants):
        self.asked += [w.cid for w in wants]
        if self.fail:
            raise Unavailable("source down")
        await trio.sleep(0.001)                  # a network round trip: others overlap it
        ids = [w.cid for w in wants if self.only is None or w.cid in self.only]
        got = chunkput.held_bytes(self.engine.chunks, ids)
        for w in wants:                          # offsets/lengths match the manifest
            if w.cid in got:
                assert len(got[w.cid]) == w.length
        return {c: (b"X" + d[1:] if c in self.corrupt else d) for c, d in got.items()}

    def rejected(self, image, want):
        self.rejects.append(want.cid)


async def _pieces(data):
    for i in range(0, len(data), MiB):
        yield data[i:i + MiB]


@pytest.fixture
async def pair(tmp_path):
    a = await Engine.open(EngineConfig(data_dir=tmp_path / "a", durable=False))
    b = await Engine.open(EngineConfig(data_dir=tmp_path / "b", durable=False))
    yield a, b
    await a.aclose()
    await b.aclose()


async def _image(a, b, data):
    rec = await a.create_image({"name": "x", "disk_format": "raw",
                                "container_format": "bare"}, owner="p")
    await a.upload(rec.id, _pieces(data), expected_size=len(data))
    doc = a.replica.export_doc(rec.id)
    doc["stamp"] = 1                     # a single node stamps nothing; a peer's doc would
    assert await b.replica.apply_doc(doc)
    return rec.id


async def _read(engine, image_id, start=0, end=None):
    h = hashlib.sha256()
    async for view in engine.open_download(image_id, start, end):
        h.update(view)
    return h.hexdigest()


def _sha(data):
    return hashlib.sha256(data).hexdigest()


async def test_cold_then_warm_read_is_byte_identical_and_kept(pair):
    a, b = pair
    data = os.urandom(3 * MiB) + bytes(5 * MiB) + os.urandom(9 * MiB)   # zeros inside
    image_id = await _image(a, b, data)
    ids = a.chunks.image_chunks(image_id)
    assert chunkput.missing(b.chunks, ids) == ids
    source = StoreSource(a)
    b.data.add_chunk_source(source)
    assert await _read(b, image_id) == _sha(data)
    await b.data.filler.settled()
    assert chunkput.missing(b.chunks, ids) == []          # kept in the cache tier
    assert sorted(source.asked) == sorted(set(ids))       # each chunk asked once
    assert b.data.filler.fetched_bytes == sum(len(d) for d in
                                              chunkput.held_bytes(a.chunks, ids).values())
    asked = len(source.asked)
    assert await _read(b, image_id) == _sha(data)         # warm: nothing asked again
    assert len(source.asked) == asked
    # primed (as the HTTP layer does), a fully held range takes the plain reader
    download = b.open_download(image_id, 1000, 9 * MiB)
    await download.prime()
    assert isinstance(download.reader, ChunkReader)
    h = hashlib.sha256()
    async for view in download:
        h.update(view)
    assert h.hexdigest() == _sha(data[1000:9 * MiB])
    with b.index.read() as txn:
        assert all(b.chunks.db.get(txn, c).residency == 1 for c in ids[:3])  # cache


async def test_kept_chunks_lie_in_image_order_whatever_order_sources_answer(pair):
    """A source answering in its own order (here: reversed) still leaves each window's
    chunks adjacent in the cache tier in the image's order, so a warm read of them is a
    few long segment runs, not one run per chunk."""
    a, b = pair
    data = os.urandom(6 * MiB)
    image_id = await _image(a, b, data)
    ids = a.chunks.image_chunks(image_id)

    class Reversed(StoreSource):
        async def fetch(self, image, wants):
            got = await super().fetch(image, wants)
            return dict(reversed(list(got.items())))

    b.data.add_chunk_source(Reversed(a))
    assert await _read(b, image_id) == _sha(data)
    await b.data.filler.settled()
    with b.index.read() as txn:
        entries = [b.chunks.db.get(txn, c) for c in ids]
    adjacent = sum(1 for x, y in zip(entries, entries[1:])
                   if x.segment == y.segment and x.offset < y.offset)
    assert adjacent >= len(ids) - 1 - 6 * MiB // fillreader.WINDOW   # breaks at windows only


async def test_ranges_inside_and_across_chunks(pair):
    a, b = pair
    data = os.urandom(10 * MiB)
    image_id = await _image(a, b, data)
    b.data.add_chunk_source(StoreSource(a))
    for start, end in [(0, 1), (12345, 70000), (MiB - 7, 5 * MiB + 3), (len(data) - 10, None)]:
        stop = len(data) if end is None else end
        assert await _read(b, image_id, start, end) == _sha(data[start:stop])


async def test_sources_are_chained_in_order(pair):
    a, b = pair
    data = os.urandom(6 * MiB)
    image_id = await _image(a, b, data)
    ids = a.chunks.image_chunks(image_id)
    half = set(ids[: len(ids) // 2])
    down = StoreSource(a, "down", fail=True)
    first = StoreSource(a, "first", only=half)
    second = StoreSource(a, "second")
    for s in (down, first, second):
        b.data.add_chunk_source(s)
    assert await _read(b, image_id) == _sha(data)
    assert set(first.asked) == set(ids)
    assert set(second.asked) == set(ids) - half             # only what was still missing


async def test_bad_bytes_are_rejected_never_served_or_kept(pair):
    a, b = pair
    data = os.urandom(12 * MiB)
    image_id = await _image(a, b, data)
    ids = a.chunks.image_chunks(image_id)
    bad = ids[-1]
    liar = StoreSource(a, "liar", corrupt={bad})
    b.data.add_chunk_source(liar)
    served = bytearray()
    with pytest.raises(Unavailable):
        async for view in b.open_download(image_id):
            served += view
    assert data.startswith(served) and len(served) < len(data)
    assert set(liar.rejects) == {bad}                   # asked again once, still bad
    await b.data.filler.settled()
    assert chunkput.missing(b.chunks, [bad]) == [bad]
    # a second, honest source behind it provides the chunk: the read completes
    b.data.add_chunk_source(StoreSource(a, "honest"))
    assert await _read(b, image_id) == _sha(data)


async def test_concurrent_downloads_share_each_fetch(pair):
    a, b = pair
    data = os.urandom(16 * MiB)
    image_id = await _image(a, b, data)
    source = StoreSource(a)
    b.data.add_chunk_source(source)
    results = []

    async def one():
        results.append(await _read(b, image_id))

    async with trio.open_nursery() as n:
        for _ in range(4):
            n.start_soon(one)
    assert results == [_sha(data)] * 4
    ids = a.chunks.image_chunks(image_id)
    assert sorted(source.asked) == sorted(set(ids))


async def test_first_bytes_leave_before_the_image_is_fetched(pair, monkeypatch):
    a, b = pair
    # small windows, so that the read-ahead covers a part of a 40 MiB image
    monkeypatch.setattr(fillreader, "WINDOW", 4 * MiB)
    monkeypatch.setattr(fillreader, "AHEAD", 4)
    data = os.urandom(40 * MiB)
    image_id = await _image(a, b, data)
    source = StoreSource(a)
    b.data.add_chunk_source(source)
    download = b.open_download(image_id)
    await download.prime()
    assert not isinstance(download.reader, ChunkReader)   # cold: filled from the source
    it = download.__aiter__()
    first = bytes(await it.__anext__())
    assert data.startswith(first)
    # only the read-ahead windows were asked for, not the image
    asked = chunkput.held_bytes(a.chunks, list(set(source.asked)))
    ahead = (fillreader.AHEAD + 1) * (fillreader.WINDOW + 256 * 1024)
    assert sum(len(d) for d in asked.values()) <= ahead < len(data)
    await download.aclose()


async def test_a_bad_held_chunk_is_refilled_from_the_sources(pair):
    a, b = pair
    data = os.urandom(12 * MiB)
    image_id = await _image(a, b, data)
    source = StoreSource(a)
    b.data.add_chunk_source(source)
    assert await _read(b, image_id) == _sha(data)
    await b.data.filler.settled()
    ids = a.chunks.image_chunks(image_id)
    bad = ids[len(ids) // 2]
    await make_stale(b.chunks, [bad])                # so reads verify the kept copy
    with b.index.read() as txn:
        entry = b.chunks.db.get(txn, bad)
    path = b.chunks.cfg.segments_dir / f"{entry.segment:08d}.seg"
    with open(path, "r+b") as f:                     # the kept copy goes bad on disk
        f.seek(entry.offset + 10)
        byte = f.read(1)
        f.seek(entry.offset + 10)
        f.write(bytes([byte[0] ^ 0x55]))
    asked = len(source.asked)
    assert await _read(b, image_id) == _sha(data)    # served right, from the source
    assert bad in source.asked[asked:]
