# The s3 store against a real radosgw (tests/objstore/conftest.py): uploads become pack
# objects (never one per chunk) and are active only once durable there; the local copies are
# cache; a download with the cache evicted reads the packs back with coalesced ranged GETs;
# an upload the object store refuses leaves the image queued and nothing indexed.
from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest
import trio

from tessera.engine import manifest
from tessera.engine.chunkdb import CACHE
from tessera.engine.config import EngineConfig, MiB
from tessera.engine.engine import Engine
from tessera.engine.chunkid import digest
from tessera.engine.chunksource import Want
from tessera.engine.errors import Conflict, InvalidInput, Unavailable
from tessera.engine.objstore.check import check_index, check_objects
from tessera.engine.objstore.objdb import Loc, ObjDB
from tessera.engine.objstore.packs import read_pack
from tessera.engine.pruner import Pruner
from tessera.engine.stores import StoreConfig, check_configs


async def make_engine(tmp_path, ep, bucket: str, prefix: str = "",
                      pack_size: int | None = None) -> Engine:
    """An engine with a local default store and an s3 store "obj" on `bucket`."""
    cfg = EngineConfig(data_dir=tmp_path / "data", durable=False, reaper_grace=0.0,
                       stores=(StoreConfig("main"), StoreConfig(
                           "obj", type="s3", endpoint=ep.endpoint, bucket=bucket,
                           region=ep.region, access_key=ep.access_key,
                           secret_key=ep.secret_key, prefix=prefix, retry_time=2.0,
                           pack_size=pack_size)))
    return await Engine.open(cfg)


async def pieces(data: bytes, size: int = MiB):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def upload(engine: Engine, data: bytes, store: str, piece: int = MiB):
    img = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner=None)
    return await engine.upload(img.id, pieces(data, piece), expected_size=len(data),
                               store=store)


async def assert_consistent(store) -> None:
    """No dangling reference: the index is consistent and every indexed object is there."""
    assert check_index(store.tier) == []
    assert await check_objects(store.tier) == []


async def download(engine: Engine, image_id: str, start: int = 0,
                   end: int | None = None) -> str:
    h = hashlib.sha256()
    dl = engine.open_download(image_id, start, end)
    async for view in dl:
        h.update(view)
    return h.hexdigest()


async def test_upload_evict_download_byte_identical(tmp_path, s3_endpoint, s3_bucket, s3):
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket)
    try:
        store = engine.stores.get("obj")
        data = os.urandom(40 * MiB) + bytes(2 * MiB) + os.urandom(6 * MiB)
        rec = await upload(engine, data, "obj")
        assert rec.status == "active" and rec.stores == ("obj",)

        # the index maps every chunk of the manifest to an object the bucket holds
        db = ObjDB(store.index)
        with store.index.read() as txn:
            rows = db.rows(txn)
            ids = store.image_chunks(rec.id)
            locs = {cid: db.loc(txn, cid) for cid in ids}
            entries = {cid: store.db.get(txn, cid) for cid in ids}
        assert ids and all(loc is not None and loc.obj in rows for loc in locs.values())
        listed = {k: size for k, size in (
            (o["Key"], o["Size"]) for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"])}
        assert listed == {store.tier.key(obj): row.size for obj, row in rows.items()}
        # never one object per chunk: a few tens of MiB each (<= 64 objects per GiB)
        per_gib = len(rows) / (len(data) / (1024 * MiB))
        assert len(rows) < len(ids) / 50 and per_gib <= 64, (len(rows), per_gib)
        # objects are self-describing packs named by their content
        obj, row = next(iter(rows.items()))
        body = s3.get_object(Bucket=s3_bucket, Key=store.tier.key(obj))["Body"].read()
        assert digest(body) == obj and len(body) == row.size
        packed = {pc.cid: (pc.offset, pc.length) for pc in read_pack(body)}
        for cid, loc in locs.items():
            if loc.obj == obj:
                assert packed[cid] == (loc.offset, loc.length)
                assert digest(body[loc.offset:loc.offset + loc.length]) == cid
        # the local copies are cache, evictable
        assert all(e.residency == CACHE and e.resident for e in entries.values())

        evicted = await Pruner(store, budget=0).run_once()
        assert evicted.cache_bytes == 0 and evicted.evicted_chunks == len(ids)
        with store.index.read() as txn:
            assert not any(store.db.get(txn, cid).resident for cid in ids)

        reader = store.tier.reader
        gets = reader.stats["gets"]
        assert await download(engine, rec.id) == hashlib.sha256(data).hexdigest()
        # coalesced: a ranged GET carries many chunks
        assert 0 < reader.stats["gets"] - gets < len(ids) / 8
        part = await download(engine, rec.id, 41 * MiB + 17, 45 * MiB + 5)
        assert part == hashlib.sha256(data[41 * MiB + 17:45 * MiB + 5]).hexdigest()
        await assert_consistent(store)
        # what was read back is kept in the cache tier again
        await engine.data.filler.settled()
        with store.index.read() as txn:
            back = sum(1 for cid in ids if store.db.get(txn, cid).resident)
        assert back > len(ids) // 2
    finally:
        await engine.aclose()


async def test_a_reopened_store_reads_its_objects(tmp_path, s3_endpoint, s3_bucket, s3):
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket)
    try:
        data = os.urandom(3 * MiB)
        rec = await upload(engine, data, "obj")
        writer = engine.stores.get("obj").tier.writer
    finally:
        await engine.aclose()
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket)
    try:
        store = engine.stores.get("obj")
        assert store.tier.writer == writer                  # kept in the store's index
        await Pruner(store, budget=0).run_once()
        assert await download(engine, rec.id) == hashlib.sha256(data).hexdigest()
        await engine.processes.reap(grace=0)                # nothing of it is garbage
        assert bucket_keys(s3, s3_bucket) == {store.tier.key(o) for o in rows_of(store)} != set()
    finally:
        await engine.aclose()


async def test_neighbouring_misses_share_a_ranged_get(tmp_path, s3_endpoint, s3_bucket):
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket)
    try:
        store = engine.stores.get("obj")
        data = os.urandom(6 * MiB)
        rec = await upload(engine, data, "obj")
        await Pruner(store, budget=0).run_once()
        source = engine.data.filler.sources[0]
        assert source.name == "s3"
        with store.index.read() as txn:
            head = manifest.read_head(txn, store.db.manifests, manifest.image_key(rec.id))
            page = manifest.read_page(txn, store.db.manifests, manifest.image_key(rec.id), 0)
        assert head is not None
        wants = [Want(cid, start, n) for cid, start, n in
                 zip(page.ids, page.starts, page.lengths) if cid is not None]
        halves = [wants[0::2], wants[1::2]]        # two concurrent fetches, interleaved
        before = store.tier.reader.stats["gets"]
        got: list[dict] = [{}, {}]

        async def fetch(i: int) -> None:
            got[i] = await source.fetch(rec, halves[i])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, 0)
            nursery.start_soon(fetch, 1)
        assert store.tier.reader.stats["gets"] - before == 1
        for half, out in zip(halves, got):
            assert set(out) == {w.cid for w in half}
            assert all(digest(b) == cid for cid, b in out.items())
        # an image of a local store is not this source's
        other = replace(rec, stores=("main",))
        assert await source.fetch(other, wants[:3]) == {}
    finally:
        await engine.aclose()


async def test_packs_stream_out_while_the_upload_runs(tmp_path, s3_endpoint, s3_bucket, s3):
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket, pack_size=2 * MiB)
    try:
        store = engine.stores.get("obj")
        data = os.urandom(16 * MiB)
        seen_during: list[int] = []

        async def source():
            yield data[:8 * MiB]
            with trio.fail_after(20):      # the first packs leave before the body ends
                while store.tier.stats["streamed_objects"] == 0:
                    await trio.sleep(0.01)
            seen_during.append(len(bucket_keys(s3, s3_bucket)))
            yield data[8 * MiB:]

        img = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                        owner=None)
        rec = await engine.upload(img.id, source(), expected_size=len(data), store="obj")
        assert rec.status == "active" and seen_during[0] >= 1
        rows = rows_of(store)
        assert len(rows) == store.tier.stats["objects_written"] >= 4   # a group (~4 MiB) each
        assert bucket_keys(s3, s3_bucket) == {store.tier.key(o) for o in rows}
        await Pruner(store, budget=0).run_once()
        assert await download(engine, rec.id) == hashlib.sha256(data).hexdigest()
    finally:
        await engine.aclose()


def test_merged_ranges_stay_useful_and_bounded():
    from tessera.engine.objstore.source import merge_ranges

    K = 1024
    obj = b"o" * 32

    def ranges(spec, gap=MiB, max_read=16 * MiB):
        locs = [(bytes([i]) * 32, Loc(obj, off, n)) for i, (off, n) in enumerate(spec)]
        return [(a, b, len(m)) for a, b, m in merge_ranges(locs, gap, max_read)]

    # neighbours merge; a gap over `gap` splits
    assert ranges([(0, 64 * K), (64 * K, 64 * K), (200 * K, 64 * K)]) == [(0, 264 * K, 3)]
    assert ranges([(0, 64 * K), (2 * MiB, 64 * K)]) == [(0, 64 * K, 1),
                                                        (2 * MiB, 2 * MiB + 64 * K, 1)]
    # a range is never mostly gap: small chunks far apart are read one by one
    assert len(ranges([(0, 16 * K), (900 * K, 16 * K)])) == 2
    # and never longer than max_read
    spec = [(i * 256 * K, 256 * K) for i in range(16)]
    assert [b - a for a, b, _ in ranges(spec, max_read=MiB)] == [MiB] * 4


async def test_concurrent_uploads_of_the_same_bytes(tmp_path, s3_endpoint, s3_bucket):
    """A chunk one upload wrote and another borrowed is in the object store for both,
    whichever commits first."""
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket)
    try:
        store = engine.stores.get("obj")
        data = os.urandom(12 * MiB)
        recs = []

        async def one() -> None:
            recs.append(await upload(engine, data, "obj", piece=256 * 1024))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)
        # the later commit carried chunks the other upload wrote into its own packs
        assert store.tier.stats["copied_in_chunks"] > 0
        await Pruner(store, budget=0).run_once()
        for rec in recs:
            assert await download(engine, rec.id) == hashlib.sha256(data).hexdigest()
        await assert_consistent(store)
        db = ObjDB(store.index)
        with store.index.read() as txn:
            for rec in recs:
                assert all(db.loc(txn, cid) is not None for cid in store.image_chunks(rec.id))
    finally:
        await engine.aclose()


async def test_refused_upload_leaves_the_image_queued_and_nothing_indexed(
        tmp_path, s3_endpoint, s3_bucket):
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket + "-missing")
    try:
        store = engine.stores.get("obj")
        img = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                        owner=None)
        with pytest.raises(Unavailable) as err:
            await engine.upload(img.id, pieces(os.urandom(3 * MiB)), expected_size=3 * MiB,
                                store="obj")
        assert "object store" in err.value.message
        assert engine.get_image(img.id).status == "queued"
        with store.index.read() as txn:
            for name in ("objects", "objchunks", "manifests"):
                assert txn.stat(store.index.db(name))["entries"] == 0
    finally:
        await engine.aclose()


async def test_the_checker_finds_dangling_references(tmp_path, s3_endpoint, s3_bucket, s3):
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket)
    try:
        store = engine.stores.get("obj")
        rec = await upload(engine, os.urandom(2 * MiB), "obj")
        await assert_consistent(store)
        (obj,) = rows_of(store)
        s3.delete_object(Bucket=s3_bucket, Key=store.tier.key(obj))
        assert len(await check_objects(store.tier)) == 1
        cid = store.image_chunks(rec.id)[0]
        await store.index.writer.run(lambda txn: ObjDB(store.index).unmap(txn, cid))
        assert any("referenced but has no object" in p for p in check_index(store.tier))
    finally:
        await engine.aclose()


def test_info_stores_detail_shows_an_s3_store_as_glance_does():
    from tessera.http.stores import _entry

    sc = StoreConfig("obj", type="s3", endpoint="http://127.0.0.1:1", bucket="bkt", weight=3)
    assert _entry(sc, detail=False, path="x") == {"id": "obj", "description": ""}
    detail = _entry(sc, detail=True, path="x")
    assert detail["type"] == "s3" and detail["weight"] == 3
    assert set(detail["properties"]) == {"s3_store_large_object_size",
                                         "s3_store_large_object_chunk_size",
                                         "s3_store_thread_pools"}


def test_an_s3_store_cannot_be_the_default():
    with pytest.raises(InvalidInput):
        check_configs((StoreConfig("main"), StoreConfig(
            "obj", type="s3", default=True, endpoint="http://127.0.0.1:1", bucket="bkt")))



def bucket_keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", ())}


def rows_of(store) -> dict:
    with store.index.read() as txn:
        return ObjDB(store.index).rows(txn)


async def test_reaper_repacks_low_packs_and_deletes_dead_ones(tmp_path, s3_endpoint, s3_bucket,
                                                              s3):
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket, pack_size=8 * MiB)
    try:
        store = engine.stores.get("obj")
        a = os.urandom(24 * MiB)
        ra = await upload(engine, a, "obj")
        rb = await upload(engine, a[:3 * MiB], "obj")      # shares A's first pack
        c, d = os.urandom(2 * MiB), os.urandom(2 * MiB)
        rc = await upload(engine, c, "obj")
        rd = await upload(engine, d, "obj")
        db = ObjDB(store.index)
        with store.index.read() as txn:
            b_objs = {db.loc(txn, cid).obj for cid in store.image_chunks(rb.id)}
            a_objs = {db.loc(txn, cid).obj for cid in store.image_chunks(ra.id)}
        before = rows_of(store)
        assert bucket_keys(s3, s3_bucket) == {store.tier.key(o) for o in before}
        shared = b_objs & a_objs
        assert len(shared) == 1 and len(a_objs) >= 3

        await engine.delete_image(ra.id)
        await engine.delete_image(rc.id)
        out = await engine.processes.reap(grace=0)
        last = engine.processes.reapers["obj"].last
        assert out["obj"]["repacked_objects"] == last.repacked_objects == 1
        assert last.dead_objects == len(a_objs) - 1 + 1       # A's other packs and C's
        assert last.moved_chunks > 0 and not last.skipped

        after = rows_of(store)
        assert bucket_keys(s3, s3_bucket) == {store.tier.key(o) for o in after}
        assert not (set(after) & (a_objs | shared))            # old packs are gone
        assert len(after) == len(before) - len(a_objs) - 1 + 1  # ... and one new pack
        assert all(row.chunks > 0 for row in after.values())
        (new,) = set(after) - set(before)                       # the repacked pack
        body = s3.get_object(Bucket=s3_bucket, Key=store.tier.key(new))["Body"].read()
        assert digest(body) == new
        with store.index.read() as txn:
            for pc in read_pack(body):
                assert db.loc(txn, pc.cid) == Loc(new, pc.offset, pc.length)
                assert digest(body[pc.offset:pc.offset + pc.length]) == pc.cid
        # what is still referenced reads back whole from the objects alone
        await Pruner(store, budget=0).run_once()
        assert await download(engine, rb.id) == hashlib.sha256(a[:3 * MiB]).hexdigest()
        assert await download(engine, rd.id) == hashlib.sha256(d).hexdigest()
        await assert_consistent(store)
        # a second pass finds nothing to do
        await engine.processes.reap(grace=0)
        again = engine.processes.reapers["obj"].last
        assert (again.repacked_objects, again.dead_objects, again.orphans) == (0, 0, 0)
    finally:
        await engine.aclose()


async def test_mappings_of_chunks_the_pruner_dropped_go(tmp_path, s3_endpoint, s3_bucket, s3,
                                                        monkeypatch):
    """Unreferenced cache chunks evicted by the pruner (their entries dropped before the
    reaper saw them) lose their mappings in a later collection, scanned page by page."""
    from tessera.engine.objstore import gc

    monkeypatch.setattr(gc, "SCAN_BATCH", 7)
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket)
    try:
        store = engine.stores.get("obj")
        keep, gone = os.urandom(MiB), os.urandom(2 * MiB)
        rk = await upload(engine, keep, "obj")
        rg = await upload(engine, gone, "obj")
        n_gone = len(store.image_chunks(rg.id))
        await engine.delete_image(rg.id)
        await Pruner(store, budget=0).run_once()          # drops the unreferenced entries
        await engine.processes.reap(grace=0)
        last = engine.processes.reapers["obj"].last
        assert last.unmapped == n_gone > 7 and last.dead_objects == 1
        with store.index.read() as txn:
            assert txn.stat(store.index.db("objchunks"))["entries"] == \
                len(store.image_chunks(rk.id))
        assert bucket_keys(s3, s3_bucket) == {store.tier.key(o) for o in rows_of(store)}
        assert await download(engine, rk.id) == hashlib.sha256(keep).hexdigest()
        await assert_consistent(store)
    finally:
        await engine.aclose()


async def test_garbage_objects_go_after_the_grace(tmp_path, s3_endpoint, s3_bucket, s3):
    """Objects of an upload that never committed (here: its manifest commit is refused after
    the PUTs) and stray keys among this store's packs are deleted once seen for longer than
    the grace; other keys (outside the prefix, other writers' packs) and objects the index
    knows are never touched."""
    from tessera.engine.objstore.gc import TierReaper

    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket, prefix="site/")
    try:
        store = engine.stores.get("obj")
        data = os.urandom(3 * MiB)
        rec = await upload(engine, data, "obj")
        kept = bucket_keys(s3, s3_bucket)
        assert kept and all(k.startswith(f"site/packs/{store.tier.writer}/") for k in kept)
        # a second ingest for the same image: its packs are PUT, then the commit conflicts
        ingested = await store.ingest(pieces(os.urandom(2 * MiB)), expected_size=None,
                                      size_cap=1 << 40)
        with pytest.raises(Conflict):
            await store.tier.commit(ingested, rec.id)
        ingested.abandon()
        stray = "site/" + store.tier.key(b"\xab" * 32)
        foreign = {"notes/keep", f"site/packs/othernode-1234/{'cd' * 32}",
                   f"packs/{store.tier.writer}/{'ef' * 32}"}
        for key in (stray, *foreign):
            s3.put_object(Bucket=s3_bucket, Key=key, Body=b"junk")
        garbage = bucket_keys(s3, s3_bucket) - kept - foreign
        assert stray in garbage and len(garbage) >= 2

        reaper = TierReaper(store, store.tier)
        first = await reaper.collect(now=1000.0, grace=60.0)
        assert first.orphans == 0
        assert (await reaper.collect(now=1059.0, grace=60.0)).orphans == 0
        assert (await reaper.collect(now=1061.0, grace=60.0)).orphans == len(garbage)
        assert bucket_keys(s3, s3_bucket) == kept | foreign
        await assert_consistent(store)
        await Pruner(store, budget=0).run_once()
        assert await download(engine, rec.id) == hashlib.sha256(data).hexdigest()
    finally:
        await engine.aclose()


async def wait_task(engine: Engine, task_id: str) -> None:
    with trio.fail_after(30):
        while engine.get_task(task_id).status not in ("success", "failure"):
            await trio.sleep(0.02)
    task = engine.get_task(task_id)
    assert task.status == "success", task.message


async def test_copy_image_local_to_s3_and_back(tmp_path, s3_endpoint, s3_bucket, s3):
    engine = await make_engine(tmp_path, s3_endpoint, s3_bucket)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run_background)
            store = engine.stores.get("obj")
            data = os.urandom(5 * MiB) + bytes(MiB) + os.urandom(MiB)
            rec = await upload(engine, data, "main")
            copy = {"method": {"name": "copy-image"}}
            task = await engine.import_image(rec.id, method="copy-image", import_req=copy,
                                             stores=("obj",))
            await wait_task(engine, task.id)
            assert engine.get_image(rec.id).stores == ("main", "obj")
            assert len(rows_of(store)) >= 1 and bucket_keys(s3, s3_bucket)
            await engine.delete_from_store(rec.id, "main")
            assert engine.get_image(rec.id).stores == ("obj",)
            await Pruner(store, budget=0).run_once()       # only the objects hold it now
            assert await download(engine, rec.id) == hashlib.sha256(data).hexdigest()

            await Pruner(store, budget=0).run_once()
            task = await engine.import_image(rec.id, method="copy-image", import_req=copy,
                                             stores=("main",))
            await wait_task(engine, task.id)               # read back from the objects
            assert engine.get_image(rec.id).stores == ("obj", "main")
            # held whole by the local store now: read from there, not through the bucket
            assert engine.stores.holding(("obj", "main")) is engine.stores.get("main")
            await engine.delete_from_store(rec.id, "obj")
            assert await download(engine, rec.id) == hashlib.sha256(data).hexdigest()
            await engine.processes.reap(grace=0)
            assert rows_of(store) == {} and bucket_keys(s3, s3_bucket) == set()
            await assert_consistent(store)
            nursery.cancel_scope.cancel()
    finally:
        await engine.aclose()
