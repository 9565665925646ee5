# Image record handlers: create, show, delete, deactivate/reactivate, tags -- status codes,
# headers and bodies as in Glance's transcript (glance-transcript.md sections 2, 3, 5, 7, 8).
import re
import uuid

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_create_returns_glance_view_and_location(api):
    r = await api.post("/v2/images", {"name": "transcript-qcow2", "disk_format": "qcow2",
                                      "container_format": "bare", "purpose": "transcript"})
    assert r.status == 201
    img = r.json()
    assert r.header("Location") == f"http://127.0.0.1:9292/v2/images/{img['id']}"
    assert r.header("Content-Type") == "application/json"
    assert r.header("OpenStack-image-import-methods") == "glance-direct,web-download"
    assert list(img) == ["purpose", "name", "disk_format", "container_format", "visibility",
                         "size", "virtual_size", "status", "checksum", "protected", "min_ram",
                         "min_disk", "owner", "os_hidden", "os_hash_algo", "os_hash_value",
                         "id", "created_at", "updated_at", "tags", "self", "file", "schema"]
    assert img["status"] == "queued" and img["visibility"] == "shared"
    assert img["owner"] is None and img["tags"] == [] and img["size"] is None
    assert ISO.match(img["created_at"]) and ISO.match(img["updated_at"])
    assert img["self"] == f"/v2/images/{img['id']}"
    assert img["file"] == f"/v2/images/{img['id']}/file"
    assert img["schema"] == "/v2/schemas/image"


async def test_show_and_unknown_ids(api):
    img = await api.create(name="x")
    r = await api.get(f"/v2/images/{img['id']}")
    assert r.status == 200 and r.json() == img
    missing = str(uuid.uuid4())
    r = await api.get(f"/v2/images/{missing}")
    assert r.status == 404
    assert r.json()["message"] == f"No image found with ID {missing}<br /><br />\n\n\n"
    r = await api.get("/v2/images/not-a-uuid")
    assert r.status == 404
    assert r.json()["message"].startswith("No image found with ID not-a-uuid")


async def test_non_ascii_is_sent_raw(api):
    r = await api.post("/v2/images", {"name": "caf\u00e9 \u6771\u4eac"})
    assert r.status == 201
    assert "caf\u00e9 \u6771\u4eac".encode() in r.body


async def test_create_errors(api):
    r = await api.post("/v2/images", {"name": "bad", "status": "active"})
    assert r.status == 403 and "Attribute 'status' is read-only." in r.json()["message"]
    r = await api.request("POST", "/v2/images", b'{"name": ',
                          headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert r.json()["message"] == "Malformed JSON in request body.<br /><br />\n\n\n"
    r = await api.request("POST", "/v2/images", b'"just a string"',
                          headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert r.json()["message"].startswith("Unexpected body type. Expected list/dict.")
    r = await api.request("POST", "/v2/images", b"")
    assert r.status == 400 and r.json()["message"].startswith("Body expected in request.")
    r = await api.post("/v2/images", {"name": "bad", "foo": 1})
    assert r.status == 400
    r = await api.post("/v2/images", {"name": "bad", "disk_format": "floppy"})
    assert r.status == 400
    img = await api.create(name="dup")
    r = await api.post("/v2/images", {"id": img["id"], "name": "dup"})
    assert r.status == 409


async def test_json_body_over_the_limit_is_413(make_api):
    from tessera.http.config import ServerConfig
    small = await make_api(server=ServerConfig(max_json_body=100))
    r = await small.post("/v2/images", {"name": "x" * 200})
    assert r.status == 413
    r = await small.post("/v2/images", {"name": "ok"})
    assert r.status == 201


async def test_delete_then_404s(api):
    img = await api.create(name="gone")
    r = await api.delete(f"/v2/images/{img['id']}")
    assert r.status == 204
    assert r.header("Content-Type") == "text/html; charset=UTF-8"
    assert r.header("Content-Length") == "0" and r.body == b""
    r = await api.get(f"/v2/images/{img['id']}")
    assert r.status == 404
    r = await api.delete(f"/v2/images/{img['id']}")
    assert r.status == 404
    assert r.json()["message"].startswith(f"Failed to find image {img['id']} to delete")


async def test_protected_image_cannot_be_deleted(api):
    img = await api.create(name="p", protected=True)
    r = await api.delete(f"/v2/images/{img['id']}")
    assert r.status == 403
    assert f"Image {img['id']} is protected and cannot be deleted." in r.json()["message"]


async def test_deactivate_reactivate(api):
    img = await api.create(name="d")
    r = await api.post(f"/v2/images/{img['id']}/actions/deactivate")
    assert r.status == 403
    assert r.json()["message"].startswith("Not allowed to deactivate image in status 'queued'")
    assert (await api.upload(img["id"], b"x" * 1000)).status == 204
    r = await api.post(f"/v2/images/{img['id']}/actions/deactivate")
    assert r.status == 204 and r.header("Content-Type") == "text/html; charset=UTF-8"
    assert (await api.get(f"/v2/images/{img['id']}")).json()["status"] == "deactivated"
    r = await api.post(f"/v2/images/{img['id']}/actions/deactivate")
    assert r.status == 204                                   # idempotent
    r = await api.post(f"/v2/images/{img['id']}/actions/reactivate")
    assert r.status == 204
    assert (await api.get(f"/v2/images/{img['id']}")).json()["status"] == "active"


async def test_action_with_a_body_is_400(api):
    img = await api.create(name="d")
    r = await api.request("POST", f"/v2/images/{img['id']}/actions/deactivate", b"{}")
    assert r.status == 400
    assert r.json()["message"].startswith("A body is not expected with this request.")


async def test_tags(api):
    img = await api.create(name="t")
    url = f"/v2/images/{img['id']}/tags/foo"
    r = await api.put(url)
    assert r.status == 204 and r.header("Content-Type") == "text/html; charset=UTF-8"
    assert (await api.put(url)).status == 204                # idempotent
    assert (await api.get(f"/v2/images/{img['id']}")).json()["tags"] == ["foo"]
    assert (await api.delete(url)).status == 204
    r = await api.delete(url)
    assert r.status == 404
    assert r.json()["message"] == "The resource could not be found.<br /><br />\n\n\n"
    r = await api.put(f"/v2/images/{img['id']}/tags/" + "x" * 256)
    assert r.status == 400
    missing = str(uuid.uuid4())
    r = await api.put(f"/v2/images/{missing}/tags/foo")
    assert r.status == 404 and r.json()["message"].startswith(f"Image {missing} not found.")


async def test_image_tasks_list_is_empty(api):
    img = await api.create(name="t")
    r = await api.get(f"/v2/images/{img['id']}/tasks")
    assert r.status == 200 and r.json() == {"tasks": []}
    r = await api.get(f"/v2/images/{uuid.uuid4()}/tasks")
    assert r.status == 404
    assert r.json()["message"] == "The resource could not be found.<br /><br />\n\n\n"
