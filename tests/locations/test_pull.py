# Reading an image whose bytes live at an HTTP location: cold (chunks evicted from the cache
# tier, fetched from the origin with ranged GETs) and warm, byte-identical, Range requests,
# concurrent pulls, an origin whose content changed under us (clean failure, the image
# marked), and an origin that is down (clean failure, a later pull works).
from __future__ import annotations

import os

import trio

from tessera.engine import fillreader
from tessera.engine.chunksource import Want
from tessera.engine.errors import Unavailable
from tessera.http.origin import OriginSource, coalesce

CHANGED = "os_glance_origin_changed"


async def pull(node, image_id: str, rng: str | None = None):
    headers = {} if rng is None else {"Range": rng}
    return await node.get(f"/v2/images/{image_id}/file", headers=headers)


async def failed_pull(node, image_id: str) -> int:
    """A pull that must fail cleanly: 503 before the first byte, or Unavailable raised
    while the body streams (the server then cuts the connection); the status seen."""
    try:
        r = await pull(node, image_id)
    except Unavailable:
        return -1
    assert r.status == 503, (r.status, len(r.body))
    return r.status


async def cold_image(node, origin, loc, name: str, size: int) -> tuple[dict, bytes]:
    """An image registered at `name` whose chunks were all evicted; (its JSON, its bytes)."""
    data = os.urandom(size)
    img = await loc.register(node, origin, name, data)
    await loc.evict(node)
    return img, data


async def mark_of(node, image_id: str) -> str:
    """The image's os_glance_origin_changed, once it is set (the mark is a writer job)."""
    with trio.fail_after(5):
        while CHANGED not in (shown := (await node.get(f"/v2/images/{image_id}")).json()):
            await trio.sleep(0.02)
    return shown[CHANGED]


async def test_cold_then_warm_pull_is_byte_identical(node, origin, loc):
    data = os.urandom(3_000_000) + bytes(300_000) + os.urandom(1_000_000)
    img = await loc.register(node, origin, "big.raw", data)
    assert await loc.evict(node) > 0
    assert node.engine.chunks.stats()["cache_bytes"] == 0
    assert origin.ranged == []                  # the registration read the whole body
    r = await pull(node, img["id"])
    assert r.status == 200 and r.body == data
    cold = origin.ranged
    assert cold and len(cold) == len(origin.seen) - 1       # only ranged GETs since
    # zero runs are never fetched: fewer bytes than the image came from the origin
    fetched = sum(int(b) - int(a) + 1 for a, b in (s.split("-") for s in cold))
    assert fetched <= len(data) - 300_000 + 256 * 1024
    # fetched chunks were kept in the cache tier: the warm pull asks the origin nothing
    seen = len(origin.seen)
    r = await pull(node, img["id"])
    assert r.body == data and len(origin.seen) == seen
    # the index stays consistent through registration, eviction, refills and delete
    from tessera.engine.fsck import run_fsck
    assert (await node.delete(f"/v2/images/{img['id']}")).status == 204
    await node.engine.data.filler.settled()     # fsck is offline: no keeper write under it
    report = run_fsck(node.engine.cfg, index=node.engine.index)
    assert report.ok, report.render()


async def test_first_bytes_leave_before_the_image_is_fetched(node, origin, loc, monkeypatch):
    # small windows, so that the read-ahead covers a part of a 48 MiB image
    monkeypatch.setattr(fillreader, "WINDOW", 4 * 1024 * 1024)
    monkeypatch.setattr(fillreader, "AHEAD", 4)
    img, data = await cold_image(node, origin, loc, "stream.raw", 48 * 1024 * 1024)
    download = node.engine.open_download(img["id"])
    try:
        first = bytes(await download.__aiter__().__anext__())
        asked = sum(int(b) - int(a) + 1 for a, b in (s.split("-") for s in origin.ranged))
        assert data.startswith(first) and len(first) > 0
        assert asked < len(data)              # a read-ahead window, not the whole image
    finally:
        await download.aclose()


async def test_range_requests_on_a_cold_image(node, origin, loc):
    data = os.urandom(2_000_000)
    img = await loc.register(node, origin, "r.raw", data)
    await loc.evict(node)
    r = await pull(node, img["id"], "bytes=1000000-1099999")
    assert r.status == 206 and r.body == data[1_000_000:1_100_000]
    assert r.header("Content-Range") == f"bytes 1000000-1099999/{len(data)}"
    r = await pull(node, img["id"], "bytes=-5000")
    assert r.status == 206 and r.body == data[-5000:]
    r = await pull(node, img["id"])
    assert r.body == data


async def test_concurrent_cold_pulls_share_the_origin_reads(node, origin, loc):
    data = os.urandom(2_500_000)
    img = await loc.register(node, origin, "c.raw", data)
    await loc.evict(node)
    before = len(origin.seen)
    bodies = []

    async def one():
        bodies.append((await pull(node, img["id"])).body)

    async with trio.open_nursery() as n:
        for _ in range(4):
            n.start_soon(one)
    assert bodies == [data] * 4
    solo = len(origin.seen) - before
    # one pull's worth of requests, not four (each chunk fetched once)
    await loc.evict(node)
    before = len(origin.seen)
    await pull(node, img["id"])
    assert solo <= len(origin.seen) - before + 2


async def test_origin_changed_under_us(node, origin, loc):
    img, data = await cold_image(node, origin, loc, "m.raw", 1_500_000)
    origin.files["m.raw"] = os.urandom(len(data))        # same size, other bytes
    assert await failed_pull(node, img["id"]) in (503, -1)
    assert "no longer match" in await mark_of(node, img["id"])
    shown = (await node.get(f"/v2/images/{img['id']}")).json()
    assert shown["status"] == "active" and shown["os_hash_value"] == img["os_hash_value"]
    # users cannot clear or forge the mark
    r = await node.patch(f"/v2/images/{img['id']}",
                         [{"op": "remove", "path": f"/{CHANGED}"}])
    assert r.status == 403
    # the bytes the image served never changed: restoring the origin heals the reads
    origin.files["m.raw"] = data
    assert (await pull(node, img["id"])).body == data


async def test_origin_with_another_size_is_detected(node, origin, loc):
    img, data = await cold_image(node, origin, loc, "s.raw", 800_000)
    origin.files["s.raw"] = data + b"appended"
    assert await failed_pull(node, img["id"]) in (503, -1)
    assert f"{len(data) + 8} bytes" in await mark_of(node, img["id"])


async def test_origin_down_then_back(node, origin, loc):
    img, data = await cold_image(node, origin, loc, "d.raw", 1_200_000)
    origin.down = True
    assert await failed_pull(node, img["id"]) in (503, -1)
    assert CHANGED not in (await node.get(f"/v2/images/{img['id']}")).json()
    origin.down = False
    assert (await pull(node, img["id"])).body == data


async def test_next_location_when_the_first_fails(node, origin, loc):
    img, data = await cold_image(node, origin, loc, "second.raw", 700_000)
    await node.engine.locations.edit(img["id"], lambda cur: (
        (origin.url("gone.raw"), {}), *cur))
    assert (await pull(node, img["id"])).body == data
    assert any(path == "/gone.raw" for path, _ in origin.seen)
    assert "os_glance_origin_changed" not in (await node.get(f"/v2/images/{img['id']}")).json()


async def test_origin_ignoring_range(node, origin, loc):
    img, data = await cold_image(node, origin, loc, "i.raw", 900_000)
    origin.ignore_range = True
    assert (await pull(node, img["id"], "bytes=500000-")).body == data[500_000:]


async def test_the_source_directly(node, origin, loc):
    """OriginSource.fetch: coalesced ranged GETs, {} for an image without a location."""
    data = os.urandom(400_000)
    img = await loc.register(node, origin, "f.raw", data)
    rec = node.engine.get_image(img["id"])
    source = OriginSource(loc.allow(origin), node.engine.locations
                          if hasattr(node.engine, "locations") else None)
    wants = [Want(bytes([i]) * 32, off, 100_000) for i, off in
             enumerate((0, 100_000, 300_000))]
    got = await source.fetch(rec, wants)
    assert got == {w.cid: data[w.offset:w.offset + w.length] for w in wants}
    assert source.requests == 2                       # 0-199999 and 300000-399999
    assert await source.fetch(rec.evolve(locations=()), wants) == {}
    refused = OriginSource(loc.allow(origin).__class__(), None)   # loopback not allowed
    assert await refused.fetch(rec, wants) == {}


def test_coalesce():
    w = [Want(b"a", 0, 10), Want(b"b", 10, 10), Want(b"c", 30, 5), Want(b"d", 35, 50)]
    assert [[x.cid for x in run] for run in coalesce(list(reversed(w)))] == \
        [[b"a", b"b"], [b"c", b"d"]]
    assert [[x.cid for x in run] for run in coalesce(w, limit=15)] == \
        [[b"a"], [b"b"], [b"c"], [b"d"]]
