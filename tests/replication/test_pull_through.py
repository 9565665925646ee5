# Reads from a node that holds few of an image's chunks, in one process with two real
# engines and real peer sockets: the bytes are right, two concurrent downloads share each
# fetch, and the first bytes leave before the whole image has been fetched.
import hashlib
import os

import trio

from tessera.engine import fillreader


MiB = 1024 * 1024


async def _same_stamp(src, dst, image_id, timeout=20.0) -> None:
    """Until dst holds src's version of image_id's record (at most `timeout` s)."""
    with trio.move_on_after(timeout):
        while dst.replica.stamp_of(image_id) != src.replica.stamp_of(image_id):
            await trio.sleep(0.05)


async def _pieces(data: bytes):
    for i in range(0, len(data), MiB):
        yield data[i:i + MiB]


async def _uploaded(engine, data: bytes):
    """A new image on `engine` holding `data` (uploaded in 1 MiB pieces); its record."""
    rec = await engine.create_image({"name": "x", "disk_format": "raw",
                                     "container_format": "bare"}, owner="p")
    await engine.upload(rec.id, _pieces(data), expected_size=len(data))
    return rec


async def test_cold_reads_share_fetches_and_stream(engine_cluster, monkeypatch):
    # small windows, so that the read-ahead covers a part of a 40 MiB image
    monkeypatch.setattr(fillreader, "WINDOW", 4 * MiB)
    monkeypatch.setattr(fillreader, "AHEAD", 4)
    engines, nodes = await engine_cluster(     # R=1: each chunk has one owner
        ("a", "b"), replicas=1, write_quorum=1, anti_entropy_interval=3600.0)
    a, b = engines["a"], engines["b"]
    data = os.urandom(40 * MiB)
    rec = await _uploaded(a, data)
    await _same_stamp(a, b, rec.id)
    ids = a.chunks.image_chunks(rec.id)
    lacking = b.replica.missing(ids)
    assert 0 < len(lacking) < len(ids)                   # b owns some, a the others
    fetcher = nodes["b"].fetcher
    lacking_bytes = sum(len(a.replica.chunk_bytes(c)) for c in lacking)

    # the first bytes leave before the whole image has been fetched (the read-ahead covers
    # 20 of its 40 MiB; whichever windows finished first, the last 20 MiB were not asked)
    assert len(data) > (fillreader.AHEAD + 1) * fillreader.WINDOW + 4 * MiB
    download = b.open_download(rec.id)
    it = download.__aiter__()
    first = bytes(await it.__anext__())
    assert data.startswith(first)
    assert fetcher.fetched_bytes < lacking_bytes
    await download.aclose()

    # two concurrent downloads: right bytes, and no chunk is fetched twice
    results = {}

    async def read(name):
        h = hashlib.sha256()
        async for view in b.open_download(rec.id):
            h.update(view)
        results[name] = h.hexdigest()

    async with trio.open_nursery() as inner:
        inner.start_soon(read, "one")
        inner.start_soon(read, "two")
    assert results == {"one": hashlib.sha256(data).hexdigest(),
                       "two": hashlib.sha256(data).hexdigest()}
    assert fetcher.fetched_bytes == lacking_bytes        # each missing chunk once
    await b.data.filler.settled()
    assert b.replica.missing(ids) == []                  # kept (cache residency)


async def test_a_peers_bad_copy_is_refused_and_fetched_from_another(tmp_path,
                                                                    engine_cluster):
    engines, nodes = await engine_cluster(     # R=2: c lacks what a and b own
        ("a", "b", "c"), replicas=2, write_quorum=2, anti_entropy_interval=3600.0)
    a, b, c = engines["a"], engines["b"], engines["c"]
    data = os.urandom(24 * MiB)
    rec = await _uploaded(b, data)
    await _same_stamp(b, c, rec.id)
    lacking = c.replica.missing(b.chunks.image_chunks(rec.id))
    assert lacking
    # every chunk a holds goes bad on its disk (a flipped byte every 4 KiB)
    for seg in (tmp_path / "a").rglob("*.seg"):
        with open(seg, "r+b") as f:
            size = f.seek(0, 2)
            for pos in range(0, size, 4096):
                f.seek(pos)
                byte = f.read(1)
                f.seek(pos)
                f.write(bytes([byte[0] ^ 0xFF]))
    assert a.replica.chunk_bytes(lacking[0]) is None      # a's copy fails its hash
    h = hashlib.sha256()
    async for view in c.open_download(rec.id):
        h.update(view)
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert c.data.filler.rejected > 0                    # a's copies were asked and refused
