# Multiple named local stores: /v2/info/stores[/detail], the stores field and headers,
# X-Image-Meta-Store uploads, import into several stores (stores, all_stores,
# all_stores_must_succeed), copy-image, DELETE /v2/stores/{store}/{image}, dedup within each
# store, and what failures (a full store) leave behind.
from __future__ import annotations

import hashlib
import os

import pytest

from tessera.engine.stores import StoreConfig

OCTET = {"Content-Type": "application/octet-stream"}
GD = {"method": {"name": "glance-direct"}}


@pytest.fixture
async def multi(make_importer, tmp_path):
    return await make_importer(stores=(
        StoreConfig("fast", description="Fast store", default=True),
        StoreConfig("cheap", description="Cheap store", path=str(tmp_path / "cheap"))))


def chunks_in(client, store: str, image_id: str) -> list:
    return client.engine.stores.get(store).image_chunks(image_id)


async def test_discovery_with_stores(multi, tmp_path):
    r = await multi.get("/v2/info/stores")
    assert r.json() == {"stores": [
        {"id": "fast", "description": "Fast store", "default": "true"},
        {"id": "cheap", "description": "Cheap store"}]}
    detail = (await multi.get("/v2/info/stores/detail")).json()["stores"]
    assert detail[1]["properties"]["data_dir"] == str(tmp_path / "cheap")
    assert detail[0]["type"] == "file" and detail[0]["weight"] == 0
    r = await multi.post("/v2/images", {"disk_format": "raw", "container_format": "bare"})
    assert r.header("OpenStack-image-store-ids") == "fast,cheap"
    assert r.header("OpenStack-image-import-methods") == "glance-direct,web-download,copy-image"
    versions = (await multi.get("/versions")).json()["versions"]
    assert "v2.12" in [v["id"] for v in versions]


async def test_single_store_node_has_no_multi_store_api(api):
    for path in ("/v2/info/stores", "/v2/info/stores/detail"):
        r = await api.get(path)
        assert r.status == 404 and "Multi backend" in r.json()["message"]
    img = await api.create()
    r = await api.delete(f"/v2/stores/default/{img['id']}")
    assert r.status == 404
    r = await api.put(f"/v2/images/{img['id']}/file", b"x", headers={
        **OCTET, "X-Image-Meta-Store": "fast"})
    assert r.status == 400


async def test_upload_to_a_named_store_and_dedup_per_store(multi):
    data = os.urandom(400_000)
    ids = []
    for _ in range(2):
        img = await multi.create()
        r = await multi.put(f"/v2/images/{img['id']}/file", data,
                            headers={**OCTET, "X-Image-Meta-Store": "cheap"})
        assert r.status == 204
        ids.append(img["id"])
    shown = (await multi.get(f"/v2/images/{ids[0]}")).json()
    assert shown["stores"] == "cheap"
    assert (await multi.get(f"/v2/images/{ids[1]}/file")).body == data
    cheap = multi.engine.stores.get("cheap").stats()
    fast = multi.engine.stores.get("fast").stats()
    assert cheap["stored_bytes"] < 1.5 * len(data)     # the second copy deduplicated
    assert fast["stored_bytes"] == 0                      # nothing landed in the other store
    # default store upload: no header
    img = await multi.create()
    await multi.upload(img["id"], data)
    assert (await multi.get(f"/v2/images/{img['id']}")).json()["stores"] == "fast"
    assert multi.engine.stores.get("fast").stats()["stored_bytes"] >= len(data) * 0.9
    r = await multi.put(f"/v2/images/{(await multi.create())['id']}/file", data,
                        headers={**OCTET, "X-Image-Meta-Store": "nowhere"})
    assert r.status == 400


async def test_import_to_all_stores_then_delete_from_one(multi, settle):
    data = os.urandom(250_000)
    img = await multi.create()
    await multi.put(f"/v2/images/{img['id']}/stage", data, headers=OCTET)
    r = await multi.post(f"/v2/images/{img['id']}/import", {**GD, "all_stores": True})
    assert r.status == 202
    done = await settle(multi, img["id"])
    assert done["status"] == "active" and done["stores"] == "fast,cheap"
    assert done["os_glance_importing_to_stores"] == "" and done["os_glance_failed_import"] == ""
    assert chunks_in(multi, "fast", img["id"]) and chunks_in(multi, "cheap", img["id"])
    r = await multi.delete(f"/v2/stores/fast/{img['id']}")
    assert r.status == 204
    after = (await multi.get(f"/v2/images/{img['id']}")).json()
    assert after["stores"] == "cheap" and chunks_in(multi, "fast", img["id"]) == []
    assert (await multi.get(f"/v2/images/{img['id']}/file")).body == data   # from cheap
    r = await multi.delete(f"/v2/stores/cheap/{img['id']}")
    assert r.status == 403 and "only store" in r.json()["message"]
    assert (await multi.delete(f"/v2/stores/fast/{img['id']}")).status == 404
    assert (await multi.delete(f"/v2/stores/elsewhere/{img['id']}")).status == 409
    # deleting the image releases the secondary store's copy too
    assert (await multi.delete(f"/v2/images/{img['id']}")).status == 204
    assert chunks_in(multi, "cheap", img["id"]) == []


async def test_copy_image(multi, settle):
    data = os.urandom(300_000)
    img = await multi.create()
    await multi.upload(img["id"], data)
    url = f"/v2/images/{img['id']}/import"
    r = await multi.post(url, {"method": {"name": "copy-image"}, "stores": ["fast"]})
    assert r.status == 400                        # already there
    r = await multi.post(url, {"method": {"name": "copy-image"}, "stores": ["cheap"]})
    assert r.status == 202
    done = await settle(multi, img["id"])
    assert done["status"] == "active" and done["stores"] == "fast,cheap"
    assert done["checksum"] == hashlib.md5(data).hexdigest()
    await multi.delete(f"/v2/stores/fast/{img['id']}")
    assert (await multi.get(f"/v2/images/{img['id']}/file")).body == data
    r = await multi.post(url, {"method": {"name": "copy-image"}, "all_stores": True})
    assert r.status == 202
    assert (await settle(multi, img["id"]))["stores"] == "cheap,fast"
    r = await multi.post(url, {"method": {"name": "copy-image"}, "all_stores": True})
    assert r.status == 400                        # present everywhere


async def test_all_stores_and_stores_conflict(multi):
    img = await multi.create()
    await multi.put(f"/v2/images/{img['id']}/stage", b"x" * 100, headers=OCTET)
    r = await multi.post(f"/v2/images/{img['id']}/import",
                         {**GD, "all_stores": True, "stores": ["fast"]})
    assert r.status == 400
    r = await multi.post(f"/v2/images/{img['id']}/import", {**GD, "all_stores": True},
                         headers={"X-Image-Meta-Store": "fast"})
    assert r.status == 400


@pytest.fixture
async def one_full(make_importer, tmp_path):
    return await make_importer(stores=(
        StoreConfig("fast", default=True),
        StoreConfig("tiny", path=str(tmp_path / "tiny"), max_bytes=100_000)))


async def test_store_full_must_succeed_leaves_nothing(one_full, settle):
    data = os.urandom(500_000)
    img = await one_full.create()
    await one_full.put(f"/v2/images/{img['id']}/stage", data, headers=OCTET)
    await one_full.post(f"/v2/images/{img['id']}/import", {**GD, "all_stores": True})
    done = await settle(one_full, img["id"])
    assert done["status"] == "queued" and done["size"] is None
    assert done["os_glance_failed_import"] == "fast,tiny"
    task = (await one_full.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"][0]
    assert task["status"] == "failure"
    # nothing half-written is referenced in either store, and staging is clean
    assert chunks_in(one_full, "fast", img["id"]) == []
    assert chunks_in(one_full, "tiny", img["id"]) == []
    assert not (one_full.engine.cfg.staging_dir / img["id"]).exists()


async def test_store_full_allowed_to_fail(one_full, settle):
    data = os.urandom(500_000)
    img = await one_full.create()
    await one_full.put(f"/v2/images/{img['id']}/stage", data, headers=OCTET)
    await one_full.post(f"/v2/images/{img['id']}/import",
                        {**GD, "all_stores": True, "all_stores_must_succeed": False})
    done = await settle(one_full, img["id"])
    assert done["status"] == "active" and done["stores"] == "fast"
    assert done["os_glance_failed_import"] == "tiny"
    assert chunks_in(one_full, "tiny", img["id"]) == []
    assert (await one_full.get(f"/v2/images/{img['id']}/file")).body == data


async def test_reconcile_releases_orphaned_copies(multi):
    data = os.urandom(100_000)
    img = await multi.create()
    await multi.put(f"/v2/images/{img['id']}/file", data,
                    headers={**OCTET, "X-Image-Meta-Store": "cheap"})
    engine = multi.engine
    # a crash between the store's manifest commit and the record's: the record does not list
    # the store (simulated by rewriting the record)
    def forget(txn):
        rec = engine.catalog.load(txn, img["id"])
        engine.catalog.store(txn, rec, rec.evolve(stores=("fast",)))
    await engine.catalog.run(forget)
    assert chunks_in(multi, "cheap", img["id"])
    assert await engine.stores.reconcile(engine.catalog) == 1
    assert chunks_in(multi, "cheap", img["id"]) == []
