# PATCH /v2/images/{id}: both JSON-patch media types, Glance's deserializer errors, the 415
# with Accept-Patch, and the data rules the engine applies (transcript sections 2 and 8).
import pytest

V21 = "application/openstack-images-v2.1-json-patch"
V20 = "application/openstack-images-v2.0-json-patch"


async def test_replace_add_remove(api):
    img = await api.create(name="transcript-qcow2", purpose="transcript")
    url = f"/v2/images/{img['id']}"
    r = await api.patch(url, [{"op": "replace", "path": "/name", "value": "renamed"},
                              {"op": "add", "path": "/color", "value": "blue"}])
    assert r.status == 200
    body = r.json()
    assert body["name"] == "renamed" and body["color"] == "blue"
    assert list(body)[:2] == ["purpose", "color"]            # extra properties first
    r = await api.patch(url, [{"op": "remove", "path": "/color"}])
    assert r.status == 200 and "color" not in r.json()
    assert (await api.get(url)).json()["name"] == "renamed"


async def test_draft4_dialect(api):
    img = await api.create(name="old")
    url = f"/v2/images/{img['id']}"
    r = await api.patch(url, [{"replace": "/name", "value": "new"},
                              {"add": "/k", "value": "v"}], media=V20)
    assert r.status == 200 and r.json()["name"] == "new" and r.json()["k"] == "v"
    r = await api.patch(url, [{"add": "/k", "value": "w"}], media=V20)
    assert r.status == 409                                     # v2.0 add of an existing
    r = await api.patch(url, [{"add": "/k", "value": "w", "remove": "/k"}], media=V20)
    assert r.status == 400 and "only one member" in r.json()["message"]
    r = await api.patch(url, [{"path": "/k"}], media=V20)
    assert r.status == 400 and "exactly one member" in r.json()["message"]


async def test_wrong_media_type_is_415_with_accept_patch(api):
    img = await api.create(name="x")
    r = await api.patch(f"/v2/images/{img['id']}",
                        [{"op": "replace", "path": "/name", "value": "x"}],
                        media="application/json")
    assert r.status == 415
    assert r.header("Accept-Patch") == f"{V20}, {V21}"
    assert r.json()["message"] == (
        "The request media type application/json is not supported by this server.\n"
        f"<br /><br />\nImage PATCH expects Content-Type one of: {V20}, {V21}")


@pytest.mark.parametrize("ops, status, message", [
    ([{"op": "frobnicate", "path": "/name", "value": "x"}], 400,
     "Invalid operation: `frobnicate`. It must be one of the following: add, remove, "
     "replace."),
    ([{"path": "/name", "value": "x"}], 400,
     "Unable to find `op` in JSON Schema change. It must be one of the following: add, "
     "remove, replace."),
    ([{"op": "replace", "value": "x"}], 400, "Unable to find 'path' in JSON Schema change"),
    ([{"op": "replace", "path": "/name"}], 400,
     'Operation "replace" requires a member named "value".'),
    (["replace"], 400, "Operations must be JSON objects."),
    ({"op": "replace"}, 400, "Request body must be a JSON array of operation objects."),
    ([{"op": "replace", "path": "/status", "value": "active"}], 403,
     "Attribute 'status' is read-only."),
    ([{"op": "add", "path": "/os_glance_x", "value": "v"}], 403,
     "Attribute 'os_glance_x' is reserved."),
    ([{"op": "replace", "path": "name", "value": "x"}], 400,
     'Pointer `name` does not start with "/".'),
    ([{"op": "replace", "path": "/a/b", "value": "x"}], 400,
     "Invalid JSON pointer for this resource: '/a/b'"),
    ([{"op": "add", "path": "/foo", "value": 1}], 400, None),
    ([{"op": "replace", "path": "/min_disk", "value": -1}], 400, None),
    ([{"op": "remove", "path": "/name"}], 403,
     "Access was denied to this resource.<br /><br />\nProperty name may not be removed."),
])
async def test_patch_errors(api, ops, status, message):
    img = await api.create(name="x")
    r = await api.patch(f"/v2/images/{img['id']}", ops)
    assert r.status == status, r.body
    if message is not None:
        assert r.json()["message"].startswith(message)


async def test_missing_property_is_409(api):
    img = await api.create(name="x")
    r = await api.patch(f"/v2/images/{img['id']}", [{"op": "remove", "path": "/nope"}])
    assert r.status == 409
    assert r.json()["message"] == ("There was a conflict when trying to complete your request."
                                   "<br /><br />\nProperty nope does not exist.\n\n")
    r = await api.patch(f"/v2/images/{img['id']}",
                        [{"op": "replace", "path": "/nope", "value": "v"}])
    assert r.status == 409


async def test_patch_unknown_image_is_404(api):
    r = await api.patch("/v2/images/00000000-0000-0000-0000-000000000000",
                        [{"op": "replace", "path": "/name", "value": "x"}])
    assert r.status == 404
    assert r.json()["message"].startswith(
        "Failed to find image 00000000-0000-0000-0000-000000000000 to update")


async def test_malformed_patch_body(api):
    img = await api.create(name="x")
    r = await api.request("PATCH", f"/v2/images/{img['id']}", b"[{",
                          headers={"Content-Type": V21})
    assert r.status == 400 and r.json()["message"].startswith("Malformed JSON")
