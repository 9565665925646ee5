# glance-direct import through the in-process API: stage -> import (202) -> active, the task
# record, the os_glance_* bookkeeping, the format gate on staged bytes, and the refusals.
from __future__ import annotations

import hashlib
import os
import uuid

import trio

OCTET = {"Content-Type": "application/octet-stream"}
GD = {"method": {"name": "glance-direct"}}


async def test_info_import_and_create_header_advertise_what_works(api):
    r = await api.get("/v2/info/import")
    assert r.json()["import-methods"]["value"] == ["glance-direct", "web-download"]
    r = await api.post("/v2/images", {"disk_format": "raw", "container_format": "bare"})
    assert r.header("OpenStack-image-import-methods") == "glance-direct,web-download"


async def test_stage_then_import_goes_active_byte_identical(api, settle):
    data = os.urandom(300_000)
    img = await api.create(name="gd")
    r = await api.put(f"/v2/images/{img['id']}/stage", data, headers=OCTET)
    assert r.status == 204
    staged = (await api.get(f"/v2/images/{img['id']}")).json()
    assert staged["status"] == "uploading" and staged["size"] == len(data)
    r = await api.post(f"/v2/images/{img['id']}/import", GD)
    assert r.status == 202 and r.body == b""
    done = await settle(api, img["id"])
    assert done["status"] == "active"
    assert done["checksum"] == hashlib.md5(data).hexdigest()
    assert done["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert done["size"] == len(data) and done["virtual_size"] == len(data)
    assert done["os_glance_importing_to_stores"] == "" and done["os_glance_failed_import"] == ""
    got = await api.get(f"/v2/images/{img['id']}/file")
    assert got.status == 200 and got.body == data
    # the staged file is gone once the import succeeded
    assert not (api.engine.cfg.staging_dir / img["id"]).exists()
    tasks = (await api.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"]
    assert len(tasks) == 1
    t = tasks[0]
    assert t["type"] == "api_image_import" and t["status"] == "success"
    assert t["input"] == {"image_id": img["id"], "import_req": GD, "backend": ["default"]}
    assert t["result"] == {"image_id": img["id"]} and t["deleted"] is False
    assert t["request_id"] == "req-test"
    full = (await api.get(f"/v2/tasks/{t['id']}")).json()
    assert full["status"] == "success" and full["self"] == f"/v2/tasks/{t['id']}"
    assert full["expires_at"].endswith("Z")
    listing = (await api.get("/v2/tasks")).json()
    assert [x["id"] for x in listing["tasks"]] == [t["id"]]
    assert "input" not in listing["tasks"][0] and listing["schema"] == "/v2/schemas/tasks"


async def test_import_without_stage_is_409_and_no_task(api):
    img = await api.create()
    r = await api.post(f"/v2/images/{img['id']}/import", GD)
    assert r.status == 409
    assert "staged" in r.json()["message"]
    assert (await api.get(f"/v2/images/{img['id']}/tasks")).json() == {"tasks": []}


async def test_import_request_refusals(api, settle):
    img = await api.create()
    await api.put(f"/v2/images/{img['id']}/stage", b"x" * 1000, headers=OCTET)
    url = f"/v2/images/{img['id']}/import"
    r = await api.post(url, {"method": {"name": "carrier-pigeon"}})
    assert r.status == 400 and "Unknown import method name 'carrier-pigeon'." in r.body.decode()
    r = await api.post(url, {"method": {}})
    assert r.status == 400
    r = await api.post(url, {"method": {"name": "copy-image"}})    # one store: not offered
    assert r.status == 400
    r = await api.post(url, {**GD, "all_stores": "yes"})
    assert r.status == 400
    r = await api.post(url, {**GD, "stores": ["nowhere"]})
    assert r.status == 409
    r = await api.post(f"/v2/images/{uuid.uuid4()}/import", GD)
    assert r.status == 404
    # none of these started anything; the staged image is still importable
    assert (await api.get(f"/v2/images/{img['id']}")).json()["status"] == "uploading"
    assert (await api.post(url, GD)).status == 202
    assert (await settle(api, img["id"]))["status"] == "active"


async def test_second_import_while_locked_is_409(api, settle):
    img = await api.create()
    await api.put(f"/v2/images/{img['id']}/stage", os.urandom(4 << 20), headers=OCTET)
    assert (await api.post(f"/v2/images/{img['id']}/import", GD)).status == 202
    r = await api.post(f"/v2/images/{img['id']}/import", GD)
    assert r.status == 409
    assert (await settle(api, img["id"]))["status"] == "active"
    assert len((await api.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"]) == 1


async def test_staged_bytes_pass_the_format_gate(api, settle):
    # declared qcow2, staged bytes are a raw blob: the import fails like an upload would
    img = await api.create(disk_format="qcow2")
    await api.put(f"/v2/images/{img['id']}/stage", b"\x01" * 70_000, headers=OCTET)
    assert (await api.post(f"/v2/images/{img['id']}/import", GD)).status == 202
    done = await settle(api, img["id"])
    assert done["status"] == "queued" and done["size"] is None
    assert done["os_glance_failed_import"] == "default"
    assert done["os_glance_importing_to_stores"] == ""
    task = (await api.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"][0]
    assert task["status"] == "failure" and task["message"]
    assert task["result"] is None
    # nothing stored, nothing staged
    assert api.engine.chunks.image_chunks(img["id"]) == []
    assert not (api.engine.cfg.staging_dir / img["id"]).exists()
    # a good upload afterwards still works (queued again)
    r = await api.put(f"/v2/images/{img['id']}/stage", b"\x01" * 10, headers=OCTET)
    assert r.status == 204


async def test_tasks_api_is_admin_only(make_importer, identity, settle):
    from tessera.http.config import ServerConfig
    client = await make_importer(server=ServerConfig(auth="trusted-headers"))
    member = client.as_(**identity("p" * 32))
    admin = client.as_(**identity("p" * 32, roles="admin,member,reader"))
    img = (await member.post("/v2/images", {"disk_format": "raw",
                                            "container_format": "bare"})).json()
    await member.put(f"/v2/images/{img['id']}/stage", b"m" * 5000, headers=OCTET)
    assert (await member.post(f"/v2/images/{img['id']}/import", GD)).status == 202
    await settle(member, img["id"])
    tasks = (await member.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"]
    assert tasks[0]["owner"] == "p" * 32 and tasks[0]["user_id"] == "u"
    assert (await member.get("/v2/tasks")).status == 403
    assert (await member.get(f"/v2/tasks/{tasks[0]['id']}")).status == 403
    assert (await admin.get(f"/v2/tasks/{tasks[0]['id']}")).status == 200
    assert (await admin.get(f"/v2/tasks/{uuid.uuid4()}")).status == 404
    r = await admin.delete(f"/v2/tasks/{tasks[0]['id']}")
    assert r.status == 405 and r.header("Allow") == "GET"
    other = client.as_(**identity("q" * 32))
    assert (await other.post(f"/v2/images/{img['id']}/import", GD)).status == 404


async def test_an_import_killed_with_the_node_is_failed_at_start(tmp_path):
    """A node that died mid-import leaves a processing task and an importing image with the
    lock; the next start fails the task and puts the image back where Glance would."""
    from tessera.engine.config import EngineConfig
    from tessera.engine.engine import Engine

    cfg = EngineConfig(data_dir=tmp_path / "data", durable=False)
    engine = await Engine.open(cfg)
    rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner=None)

    async def body():
        yield b"s" * 5000

    await engine.stage(rec.id, body(), expected_size=None)
    # start the import, but never run the background runner: as if the node died
    task = await engine.import_image(rec.id, method="glance-direct", import_req=GD)
    await engine.aclose()

    engine = await Engine.open(cfg)
    try:
        assert engine.get_image(rec.id).status == "importing"
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run_background)
            nursery.cancel_scope.cancel()
        after = engine.get_image(rec.id)
        assert after.status == "queued" and "os_glance_import_task" not in after.properties
        assert after.properties["os_glance_failed_import"] == "default"
        t = engine.get_task(task.id)
        assert t.status == "failure" and "interrupted" in t.message
        assert not (cfg.staging_dir / rec.id).exists()
    finally:
        await engine.aclose()


async def test_import_over_the_size_quota_fails_the_task(make_importer, settle):
    api = await make_importer(image_size_total=1)           # MiB per project
    img = await api.create()
    await api.put(f"/v2/images/{img['id']}/stage", os.urandom(1_500_000), headers=OCTET)
    assert (await api.post(f"/v2/images/{img['id']}/import", GD)).status == 202
    done = await settle(api, img["id"])
    assert done["status"] == "queued"
    task = (await api.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"][0]
    assert task["status"] == "failure" and "over a limit" in task["message"]
    assert api.engine.chunks.image_chunks(img["id"]) == []
