# Discovery: versions documents (2.17 CURRENT without cache or multi-store), version prefix
# negotiation, /healthcheck, /v2/info/*, and the schemas byte for byte as Glance 33 serves
# them (tests/api/glance/*.json were fetched from a real Glance 33.0.0).
import json
from pathlib import Path

import pytest

GLANCE = Path(__file__).parent / "glance"
EXPECTED_VERSIONS = ["v2.15", "v2.9", "v2.17", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2",
                     "v2.1", "v2.0"]


async def test_versions(api):
    r = await api.get("/versions")
    assert r.status == 200 and r.header("Content-Type") == "application/json"
    versions = r.json()["versions"]
    assert [v["id"] for v in versions] == EXPECTED_VERSIONS
    assert [v["id"] for v in versions if v["status"] == "CURRENT"] == ["v2.17"]
    assert all(v["links"] == [{"rel": "self", "href": "http://127.0.0.1:9292/v2/"}]
               for v in versions)
    r = await api.get("/")
    assert r.status == 300 and r.json()["versions"] == versions
    assert (await api.request("POST", "/versions")).status == 200


@pytest.mark.parametrize("path, status", [
    ("/v2/images", 200), ("/v2.0/images", 200), ("/v2.15/images", 200), ("/v2.17/images", 200),
    ("/v2.8/images", 300), ("/v2.18/images", 300), ("/v3/images", 300), ("/images", 300),
    ("/v2/", 404), ("/v2", 404), ("/v2/nothing-here", 404),
])
async def test_version_prefixes(api, path, status):
    assert (await api.get(path)).status == status


async def test_media_type_versioning(api):
    r = await api.get("/images", headers={"Accept": "application/vnd.openstack.images-v2.1"})
    assert r.status == 200 and "images" in r.json()


async def test_public_endpoint_in_versions(make_api):
    from tessera.http.config import ServerConfig
    client = await make_api(server=ServerConfig(public_endpoint="https://images.example/api"))
    r = await client.get("/versions")
    assert r.json()["versions"][0]["links"][0]["href"] == "https://images.example/api/v2/"


async def test_healthcheck(api):
    r = await api.get("/healthcheck", headers={"Accept": None})
    assert (r.status, r.body) == (200, b"OK")
    assert r.header("Content-Type") == "text/plain; charset=UTF-8"
    r = await api.get("/healthcheck")
    assert r.status == 200 and r.json() == {"detailed": False, "reasons": ["OK"]}
    assert len(r.body) == 62
    r = await api.get("/healthcheck", headers={"Accept": "text/html"})
    assert r.header("Content-Type") == "text/html; charset=UTF-8" and b"<TD>OK</TD>" in r.body
    assert (await api.request("HEAD", "/healthcheck")).status == 204


async def test_info_routes(api):
    r = await api.get("/v2/info/import")
    assert r.json() == {"import-methods": {"description": "Import methods available.",
                                           "type": "array",
                                           "value": ["glance-direct", "web-download"]}}
    r = await api.get("/v2/info/stores")
    assert r.status == 404
    assert r.json()["message"].startswith("Multi backend is not supported at this site.")
    assert (await api.get("/v2/info/stores/detail")).status == 404
    r = await api.get("/v2/info/usage")
    assert r.status == 200 and r.body == b'{"usage": {}}'


async def test_stores_detail_is_admin_only(trusted, identity):
    r = await trusted.as_(**identity("a" * 32)).get("/v2/info/stores/detail")
    assert r.status == 403


@pytest.mark.parametrize("name", ["image", "images", "member", "members", "task", "tasks"])
async def test_schemas_are_glance_byte_for_byte(api, name):
    r = await api.get(f"/v2/schemas/{name}")
    assert r.status == 200 and r.header("Content-Type") == "application/json"
    assert r.body == (GLANCE / f"schema-{name}.json").read_bytes()


async def test_schema_routes_are_get_only(api):
    r = await api.request("POST", "/v2/schemas/image", b"{}")
    assert r.status == 405 and r.header("Allow") == "GET"


async def test_image_schema_validates_what_the_api_returns(api):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((await api.get("/v2/schemas/image")).body)
    img = await api.create(name="v", os_distro="debian")
    await api.upload(img["id"], b"abc")
    shown = (await api.get(f"/v2/images/{img['id']}")).json()
    jsonschema.validate(shown, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**shown, "os_distro": 5}, schema)


TASK_FIELDS = ["id", "type", "status", "input", "result", "owner", "message", "image_id",
               "request_id", "user_id", "expires_at", "created_at", "updated_at", "self",
               "schema"]


async def test_task_schemas_are_json_schema_with_the_task_fields(api):
    jsonschema = pytest.importorskip("jsonschema")
    task = json.loads((await api.get("/v2/schemas/task")).body)
    tasks = json.loads((await api.get("/v2/schemas/tasks")).body)
    jsonschema.Draft4Validator.check_schema(task)
    jsonschema.Draft4Validator.check_schema(tasks)
    assert task["name"] == "task" and list(task["properties"]) == TASK_FIELDS
    assert task["properties"]["type"]["enum"] == ["import", "api_image_import",
                                                  "location_import"]
    assert task["properties"]["status"]["enum"] == ["pending", "processing", "success",
                                                    "failure"]
    listed = tasks["properties"]["tasks"]["items"]["properties"]
    assert list(listed) == [f for f in TASK_FIELDS if f not in ("input", "result", "message")]
    row = {"id": "0b9f2b8e-6a3c-4c9e-9a57-3f6f0f7d5a11", "type": "api_image_import",
           "status": "success", "input": None, "result": None, "owner": "p",
           "message": "", "created_at": "2026-01-01T00:00:00Z",
           "updated_at": "2026-01-01T00:00:00Z", "self": "/v2/tasks/x", "schema": "/v2/schemas/task"}
    jsonschema.validate(row, task)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**row, "status": "done"}, task)
