# Registering an image at an HTTP location (POST /v2/images/{id}/locations): the
# location_import task reads the origin once and fills size, checksum, os_hash_value,
# virtual_size and the manifest; validation_data; the http store in /v2/info/stores and as
# a refused upload/import target; GET /v2/images/{id}/locations; the visibility options.
from __future__ import annotations

import hashlib
import os

import trio

from tessera.engine.config import EngineConfig
from tessera.http.api import build_app
from tessera.http.config import ServerConfig


async def test_register_fills_the_record_and_serves_the_bytes(node, origin, loc):
    data = os.urandom(700_000) + bytes(200_000) + os.urandom(50_000)
    img = await loc.register(node, origin, "disk.raw", data)
    assert img["status"] == "active"
    assert img["size"] == len(data) and img["virtual_size"] == len(data)
    assert img["checksum"] == hashlib.md5(data).hexdigest()
    assert img["os_hash_algo"] == "sha512"
    assert img["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert img["stores"] == "web"
    assert "locations" not in img and "direct_url" not in img      # off by default
    assert "os_glance_import_task" not in img
    assert len(origin.seen) == 1 and origin.ranged == []           # read once, whole
    r = await node.get(f"/v2/images/{img['id']}/file")
    assert r.status == 200 and r.body == data
    assert len(origin.seen) == 1                                   # served from the cache tier
    tasks = (await node.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"]
    assert [(t["type"], t["status"]) for t in tasks] == [("location_import", "success")]
    assert tasks[0]["input"]["loc_url"] == origin.url("disk.raw")
    r = await node.get(f"/v2/images/{img['id']}/locations")
    assert r.status == 200
    assert r.json() == [{"url": origin.url("disk.raw"), "metadata": {"store": "web"}}]


async def test_registered_chunks_stay_in_the_cache_tier(node, origin, loc):
    data = os.urandom(600_000)
    img = await loc.register(node, origin, "a.raw", data)
    stats = node.engine.chunks.stats()
    assert stats["cache_bytes"] == len(data)
    # an upload of the same bytes makes them the uploaded image's: no longer evictable
    other = await node.create()
    assert (await node.upload(other["id"], data)).status == 204
    assert node.engine.chunks.stats()["cache_bytes"] == 0
    r = await node.get(f"/v2/images/{img['id']}/file")
    assert r.body == data


async def test_validation_data(node, origin, loc):
    data = os.urandom(300_000)
    good = hashlib.sha256(data).hexdigest()
    img = await loc.register(node, origin, "v.raw", data, validation_data={
        "os_hash_algo": "sha256", "os_hash_value": good})
    assert img["status"] == "active"
    assert (img["os_hash_algo"], img["os_hash_value"]) == ("sha256", good)
    assert img["checksum"] == hashlib.md5(data).hexdigest()

    bad = await loc.register(node, origin, "w.raw", data, validation_data={
        "os_hash_algo": "sha512", "os_hash_value": "ab" * 64})
    assert bad["status"] == "queued" and bad["size"] is None
    assert bad["os_hash_value"] is None and "os_glance_import_task" not in bad
    task = (await node.get(f"/v2/images/{bad['id']}/tasks")).json()["tasks"][0]
    assert task["status"] == "failure" and "not matched" in task["message"]
    # a failed registration leaves the image queued: it may be registered again
    r = await node.post(f"/v2/images/{bad['id']}/locations", {"url": origin.url("w.raw")})
    assert r.status == 202
    assert (await loc.settle(node, bad["id"]))["status"] == "active"


async def test_validation_data_is_checked_up_front(node, origin, loc):
    img = await node.create()
    url = origin.url("x")
    for vd, words in [
            ({"os_hash_algo": "sha512", "os_hash_value": "zz"}, "not a valid hexadecimal"),
            ({"os_hash_algo": "sha256", "os_hash_value": "ab"}, "not the correct size"),
            ({"os_hash_algo": "crc32", "os_hash_value": "ab"}, "is not one of"),
            ({"os_hash_value": "ab" * 64}, "dependency"),
            ({"checksum": "x"}, "Additional properties")]:
        r = await node.post(f"/v2/images/{img['id']}/locations",
                            {"url": url, "validation_data": vd})
        assert r.status == 400 and words in r.json()["message"], (vd, r.body)
    for body, words in [({}, "'url' is a required property"), ({"url": 5}, "not of type"),
                        ([], "not of type 'object'")]:
        r = await node.post(f"/v2/images/{img['id']}/locations", body)
        assert r.status == 400 and words in r.json()["message"]
    assert (await node.get(f"/v2/images/{img['id']}")).json()["status"] == "queued"


async def test_only_a_queued_unlocked_image(node, origin, loc):
    origin.files["q.raw"] = os.urandom(100_000)
    img = await node.create()
    r = await node.post(f"/v2/images/{img['id']}/locations", {"url": origin.url("q.raw")})
    assert r.status == 202
    again = await node.post(f"/v2/images/{img['id']}/locations", {"url": origin.url("q.raw")})
    assert again.status == 409
    await loc.settle(node, img["id"])
    r = await node.post(f"/v2/images/{img['id']}/locations", {"url": origin.url("q.raw")})
    assert r.status == 409 and "image status is active" in r.json()["message"]
    missing = await node.post("/v2/images/00000000-0000-4000-8000-000000000000/locations",
                              {"url": origin.url("q.raw")})
    assert missing.status == 404


async def test_unreadable_origin_fails_the_task(node, origin, loc):
    img = await node.create()
    r = await node.post(f"/v2/images/{img['id']}/locations", {"url": origin.url("nothing")})
    assert r.status == 202
    done = await loc.settle(node, img["id"])
    assert done["status"] == "queued"
    task = (await node.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"][0]
    assert task["status"] == "failure" and "404" in task["message"]


async def test_format_inspection_applies_to_the_origin(node, origin, loc):
    # qcow2 declared, raw bytes at the origin: refused as an upload of them would be
    img = await node.create(disk_format="qcow2")
    origin.files["not.qcow2"] = os.urandom(20_000)
    await node.post(f"/v2/images/{img['id']}/locations", {"url": origin.url("not.qcow2")})
    done = await loc.settle(node, img["id"])
    assert done["status"] == "queued" and done["size"] is None
    task = (await node.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"][0]
    assert task["status"] == "failure" and "does not match" in task["message"]
    assert node.engine.chunks.stats()["manifests"] == 0


async def test_http_store_discovery_and_refused_as_a_target(node, origin, loc):
    stores = (await node.get("/v2/info/stores")).json()["stores"]
    assert stores == [
        {"id": "local", "description": "Local disks", "default": "true"},
        {"id": "web", "description": "Web origins", "read-only": "true"}]
    detail = (await node.get("/v2/info/stores/detail")).json()["stores"]
    assert detail[1] == {"id": "web", "description": "Web origins", "read-only": "true",
                         "type": "http", "properties": {}, "weight": 0}
    img = await node.create()
    r = await node.put(f"/v2/images/{img['id']}/file", b"abc", headers={
        "Content-Type": "application/octet-stream", "X-Image-Meta-Store": "web"})
    assert r.status == 410 and "Adding images to store is disabled" in r.json()["message"]
    assert (await node.get(f"/v2/images/{img['id']}")).json()["status"] == "queued"
    r = await node.put(f"/v2/images/{img['id']}/stage", b"abc",
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status == 204
    r = await node.post(f"/v2/images/{img['id']}/import",
                        {"method": {"name": "glance-direct"}, "stores": ["web"]})
    assert r.status == 202
    done = await loc.settle(node, img["id"])
    assert done["status"] == "queued" and done["os_glance_failed_import"] == "web"
    task = (await node.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"][0]
    assert "Adding images to store is disabled" in task["message"]
    # all_stores leaves the read-only store out
    other = await node.create()
    await node.put(f"/v2/images/{other['id']}/stage", b"abc",
                   headers={"Content-Type": "application/octet-stream"})
    r = await node.post(f"/v2/images/{other['id']}/import",
                        {"method": {"name": "glance-direct"}, "all_stores": True})
    assert r.status == 202
    assert (await loc.settle(node, other["id"]))["stores"] == "local"


async def test_visibility_options(make_node, origin, loc):
    node = await make_node(imports=loc.allow(origin), server=ServerConfig(
        show_multiple_locations=True, show_image_direct_url=True))
    empty = await node.create()
    assert empty["locations"] == [] and "direct_url" not in empty
    img = await loc.register(node, origin, "shown.raw", os.urandom(50_000))
    assert img["locations"] == [{"url": origin.url("shown.raw"),
                                 "metadata": {"store": "web"}}]
    assert img["direct_url"] == origin.url("shown.raw")
    listed = (await node.get("/v2/images")).json()["images"]
    assert {i["id"]: i.get("direct_url") for i in listed}[img["id"]] == origin.url("shown.raw")


async def test_delete_never_touches_the_origin(node, origin, loc):
    data = os.urandom(200_000)
    img = await loc.register(node, origin, "keep.raw", data)
    seen = len(origin.seen)
    assert (await node.delete(f"/v2/images/{img['id']}")).status == 204
    assert len(origin.seen) == seen and origin.files["keep.raw"] == data
    assert node.engine.chunks.stats()["manifests"] == 0


async def test_registration_cut_by_a_node_stop_is_failed_at_start(tmp_path, origin, loc,
                                                                   nursery):
    from tessera.engine.engine import Engine
    cfg = EngineConfig(data_dir=tmp_path / "d", durable=False, stores=loc.stores)
    first = await Engine.open(cfg)          # its background runner never runs: a crash
    client = loc.client(build_app(first, ServerConfig(), imports=loc.allow(origin)), first)
    origin.files["x.raw"] = data = os.urandom(60_000)
    img = await client.create()
    r = await client.post(f"/v2/images/{img['id']}/locations", {"url": origin.url("x.raw")})
    assert r.status == 202
    assert (await client.get(f"/v2/images/{img['id']}")).json()["status"] == "importing"
    await first.aclose()
    second = await Engine.open(cfg)
    scope = trio.CancelScope()

    async def background(*, task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await second.run_background(task_status=task_status)

    await nursery.start(background)
    try:
        client = loc.client(build_app(second, ServerConfig(), imports=loc.allow(origin)),
                            second)
        shown = (await client.get(f"/v2/images/{img['id']}")).json()
        assert shown["status"] == "queued" and "os_glance_import_task" not in shown
        assert (await client.get(f"/v2/images/{img['id']}/locations")).json() == []
        task = (await client.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"][0]
        assert task["status"] == "failure" and "stopped" in task["message"]
        r = await client.post(f"/v2/images/{img['id']}/locations",
                              {"url": origin.url("x.raw")})
        assert r.status == 202
        assert (await loc.settle(client, img["id"]))["status"] == "active"
        assert (await client.get(f"/v2/images/{img['id']}/file")).body == data
    finally:
        scope.cancel()
        await trio.sleep(0.05)
        await second.aclose()
