# The image cache API and the periodic processes: queue -> prefetch -> listed as cached ->
# hits counted -> pruned under the budget -> cleared; the cleaner (stalled fills, entries of
# deleted images, orphaned staging files, expired tasks); delayed delete (pending_delete until
# the scrubber runs, chunks reclaimed by the reaper after the grace); statistics() and the
# triggers (periodic loop, API, CLI).
from __future__ import annotations

import json
import os
import time
import uuid

import trio

from tessera.engine.index import pack
from tessera.engine.records import id_key
from tessera.http.config import ServerConfig


async def wait_for(predicate, timeout: float = 20.0):
    with trio.fail_after(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await trio.sleep(0.02)


async def test_cache_queue_prefetch_hits_prune_clear(make_importer):
    api = await make_importer(image_cache=True, cache_budget=1_000_000)
    a, b = os.urandom(600_000), os.urandom(700_000)
    ia, ib = (await api.create())["id"], (await api.create())["id"]
    await api.upload(ia, a)
    await api.upload(ib, b)
    assert (await api.get("/v2/cache")).json() == {"cached_images": [], "queued_images": []}
    for image_id in (ia, ib):
        r = await api.put(f"/v2/cache/{image_id}")
        assert r.status == 202

    async def both_cached():
        body = (await api.get("/v2/cache")).json()
        return body if len(body["cached_images"]) == 2 else None

    body = await wait_for(both_cached)
    assert body["queued_images"] == []
    sizes = {e["image_id"]: e["size"] for e in body["cached_images"]}
    assert sizes == {ia: len(a), ib: len(b)}
    # hits: full downloads of a cached image count, ranged ones do not
    for _ in range(2):
        assert (await api.get(f"/v2/images/{ia}/file")).body == a
    await api.get(f"/v2/images/{ia}/file", headers={"Range": "bytes=0-9"})
    hits = {e["image_id"]: e["hits"] for e in (await api.get("/v2/cache")).json()["cached_images"]}
    assert hits == {ia: 2, ib: 0}
    # prune: 1.3 MB cached over a 1 MB budget -> the least recently used (ib) goes
    r = await api.post("/v2/cache/prune")
    assert r.status == 200 and r.json() == {"total_files_pruned": 1,
                                            "total_bytes_pruned": len(b)}
    left = (await api.get("/v2/cache")).json()["cached_images"]
    assert [e["image_id"] for e in left] == [ia] and left[0]["hits"] == 2
    stats = api.engine.background.statistics()["periodic"]
    assert stats["prefetcher"]["prefetched_images"] == 2
    assert stats["cache_pruner"]["pruned_images"] == 1
    # clear: bad header, queue only (cache kept), then everything
    r = await api.delete("/v2/cache", headers={"x-image-cache-clear-target": "both"})
    assert r.status == 400
    assert (await api.delete("/v2/cache", headers={
        "x-image-cache-clear-target": "queue"})).status == 204
    assert len((await api.get("/v2/cache")).json()["cached_images"]) == 1
    assert (await api.delete("/v2/cache")).status == 204
    assert (await api.get("/v2/cache")).json() == {"cached_images": [], "queued_images": []}
    # the data itself is untouched
    assert (await api.get(f"/v2/images/{ib}/file")).body == b


async def test_cache_api_refusals(make_importer, identity, api):
    r = await api.get("/v2/cache")                       # cache API off by default
    assert r.status == 404 and "Caching via API" in r.json()["message"]
    on = await make_importer(image_cache=True, server=ServerConfig(auth="trusted-headers"))
    member = on.as_(**identity("p" * 32))
    admin = on.as_(**identity("p" * 32, roles="admin,member,reader"))
    assert (await member.get("/v2/cache")).status == 403
    img = (await admin.post("/v2/images", {"disk_format": "raw",
                                           "container_format": "bare"})).json()
    assert (await admin.put(f"/v2/cache/{img['id']}")).status == 400      # not active
    assert (await admin.put(f"/v2/cache/{uuid.uuid4()}")).status == 404
    assert (await admin.delete(f"/v2/cache/{img['id']}")).status == 404   # not cached
    versions = [v["id"] for v in (await on.get("/versions")).json()["versions"]]
    assert "v2.14" in versions and "v2.18" in versions


async def test_cleaner(make_importer):
    api = await make_importer(image_cache=True)
    engine = api.engine
    img = (await api.create())["id"]
    await api.upload(img, b"c" * 5000)
    gone = (await api.create())["id"]
    await api.upload(gone, b"g" * 5000)
    db = engine.index.db("imgcache")
    old = time.time() - 10 * 86400

    def seed(txn):
        txn.put(id_key(img), pack({"state": "filling", "size": 0, "hits": 0,
                                   "last_accessed": 0.0, "last_modified": 0.0,
                                   "started": old}), db=db)
        txn.put(id_key(gone), pack({"state": "cached", "size": 5000, "hits": 0,
                                    "last_accessed": 0.0, "last_modified": 0.0,
                                    "started": 0.0}), db=db)
    await engine.catalog.run(seed)
    await api.delete(f"/v2/images/{gone}")
    # an orphaned staged file (an import that died with the node) and a fresh one
    orphan = engine.cfg.staging_dir / str(uuid.uuid4())
    orphan.write_bytes(b"left behind")
    os.utime(orphan, (old, old))
    fresh = engine.cfg.staging_dir / str(uuid.uuid4())
    fresh.write_bytes(b"being written")
    r = await api.post("/v2/cache/clean")
    assert r.status == 200 and r.json()["total_files_cleaned"] == 3
    assert not orphan.exists() and fresh.exists()
    assert (await api.get("/v2/cache")).json() == {"cached_images": [], "queued_images": []}
    # expired task records go too
    from tessera.engine import tasks
    tdb = engine.index.db("tasks")
    t = tasks.TaskRecord(id=str(uuid.uuid4()), type="api_image_import", status="success",
                         owner=None, image_id=img, request_id=None, user_id=None,
                         created_at=old, updated_at=old, expires_at=old + 1)
    await engine.catalog.run(lambda txn: tasks.put(txn, tdb, t))
    out = await engine.processes.run("cache_cleaner")
    assert out["tasks_expired"] == 1 and engine.list_tasks() == []


async def test_delayed_delete_scrub_then_reap(make_importer):
    api = await make_importer(delayed_delete=True, scrub_time=0)
    engine = api.engine
    data = os.urandom(400_000)
    img = (await api.create())["id"]
    await api.upload(img, data)
    stored = engine.chunks.stats()["stored_bytes"]
    assert (await api.delete(f"/v2/images/{img}")).status == 204
    # gone for the API (as Glance's soft-deleted row), kept with its data until scrubbed
    assert (await api.get(f"/v2/images/{img}")).status == 404
    assert (await api.get("/v2/images")).json()["images"] == []
    assert (await api.delete(f"/v2/images/{img}")).status == 404
    with engine.index.read() as txn:
        assert engine.catalog.load(txn, img).status == "pending_delete"
    assert engine.chunks.image_chunks(img)              # data kept until the scrubber runs
    engine.background.trigger("scrubber")               # the periodic loop's trigger

    async def scrubbed():
        with engine.index.read() as txn:
            return engine.catalog.load(txn, img).status == "deleted"

    await wait_for(scrubbed)
    assert engine.chunks.image_chunks(img) == []
    assert engine.background.statistics()["periodic"]["scrubber"]["scrubbed_images"] == 1
    # chunks are reclaimed only after the grace period
    kept = await engine.processes.reap()
    assert kept["default"]["dropped_chunks"] == 0
    reaped = await engine.processes.reap(grace=0)
    assert reaped["default"]["dropped_bytes"] >= len(data) * 0.9
    assert engine.chunks.stats()["stored_bytes"] < stored


async def test_scrub_time_and_restore(make_importer):
    api = await make_importer(delayed_delete=True, scrub_time=3600)
    engine = api.engine
    img = (await api.create(visibility="shared"))["id"]
    await api.upload(img, b"r" * 10_000)
    assert (await api.post(f"/v2/images/{img}/members", {"member": "b" * 32})).status == 200
    await api.delete(f"/v2/images/{img}")
    assert await engine.processes.run("scrubber") == 0        # younger than scrub_time
    assert (await api.get(f"/v2/images/{img}")).status == 404
    await engine.processes.scrubber.restore(img)
    assert (await api.get(f"/v2/images/{img}")).json()["status"] == "active"
    listed = (await api.get("/v2/images?member_status=all")).json()["images"]
    assert [i["id"] for i in listed] == [img]
    assert [m["member_id"] for m in (await api.get(f"/v2/images/{img}/members")).json()[
        "members"]] == ["b" * 32]
    assert (await api.get(f"/v2/images/{img}/file")).body == b"r" * 10_000


def test_cli_triggers(tmp_path, capsys):
    from tessera.cli import main
    from tessera.engine.config import EngineConfig
    from tessera.engine.engine import Engine

    data_dir = tmp_path / "data"

    async def prepare() -> str:
        engine = await Engine.open(EngineConfig(data_dir=data_dir, delayed_delete=True))
        try:
            rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                            owner=None)

            async def body():
                yield os.urandom(300_000)

            await engine.upload(rec.id, body(), expected_size=None)
            await engine.delete_image(rec.id)
            return rec.id
        finally:
            await engine.aclose()

    image_id = trio.run(prepare)
    assert main(["scrub", "--data-dir", str(data_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["process"] == "scrubber" and out["result"] == 1
    assert main(["reap", "--data-dir", str(data_dir), "--grace", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"]["default"]["dropped_chunks"] > 0
    for sub in ("prune", "clean"):
        assert main(["cache", sub, "--data-dir", str(data_dir)]) == 0
        assert json.loads(capsys.readouterr().out)["statistics"]["runs"] == 1
    assert main(["scrub", "--data-dir", str(data_dir), "--restore", image_id]) == 1


async def test_restore_puts_back_what_members_list(make_importer, identity):
    client = await make_importer(delayed_delete=True, scrub_time=3600,
                                 server=ServerConfig(auth="trusted-headers"))
    owner = client.as_(**identity("a" * 32))
    member = client.as_(**identity("b" * 32))
    img = (await owner.post("/v2/images", {"disk_format": "raw", "container_format": "bare",
                                           "visibility": "shared"})).json()["id"]
    await owner.upload(img, b"m" * 1000)
    await owner.post(f"/v2/images/{img}/members", {"member": "b" * 32})
    await member.request("PUT", f"/v2/images/{img}/members/{'b' * 32}",
                         json_body={"status": "accepted"})
    assert [i["id"] for i in (await member.get("/v2/images")).json()["images"]] == [img]
    assert (await owner.delete(f"/v2/images/{img}")).status == 204
    assert (await member.get("/v2/images")).json()["images"] == []
    await client.engine.processes.scrubber.restore(img)
    assert [i["id"] for i in (await member.get("/v2/images")).json()["images"]] == [img]


async def test_cleaner_spares_a_stage_in_progress_and_drops_a_stale_one(make_importer):
    api = await make_importer(staging_stale=3600)
    engine = api.engine
    img = (await api.create())["id"]
    # an upload that is still writing: status uploading, file present, no staging record yet
    await engine.catalog.run(lambda txn: engine.catalog.cas(txn, img, "queued", "uploading",
                                                            now=time.time()))
    path = engine.cfg.staging_dir / img
    path.write_bytes(b"partial")
    old = time.time() - 600
    os.utime(path, (old, old))
    assert (await engine.processes.clean())["staging_files_removed"] == 0
    assert path.exists()
    # past staging_stale the stage is abandoned: file gone, image queued again
    out = await engine.processes.clean(now=time.time() + 7200)
    assert out["staging_files_removed"] == 1 and not path.exists()
    assert (await api.get(f"/v2/images/{img}")).json()["status"] == "queued"
