# The metadefs API over HTTP requests to the real application (real engine, LMDB in tmp_path):
# every route, its success shape (checked against what Glance 33 answers), and its errors --
# validation 400s, read-only 403s, protected 403s, duplicate 409s, missing 404s, policy.
from __future__ import annotations

import json

import pytest

from tessera.engine.metadefs_schemas import NAMES

NS = "/v2/metadefs/namespaces"

FULL = {
    "namespace": "Test::Full", "display_name": "Full", "description": "d",
    "visibility": "public", "protected": False, "owner": "p1",
    "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_",
                                    "properties_target": "image"}],
    "properties": {"cpu": {"title": "CPU", "type": "integer", "minimum": 1, "maximum": 8}},
    "objects": [{"name": "Obj1", "description": "o", "required": ["a"],
                 "properties": {"a": {"title": "A", "type": "string", "enum": ["x", "y"]}}}],
    "tags": [{"name": "t1"}, {"name": "t2"}],
}


def message(r) -> str:
    return r.json()["message"]


async def make_full(api, **over):
    r = await api.post(NS, {**FULL, **over})
    assert r.status == 201, r.body
    return r


async def test_create_namespace_shape_and_location(api):
    r = await make_full(api)
    assert r.header("Location") == "http://127.0.0.1:9292/v2/metadefs/namespaces/Test::Full"
    body = r.json()
    # Glance's key order; contents shown as sent (no timestamps on them)
    assert list(body) == ["namespace", "display_name", "description", "visibility",
                          "protected", "owner", "created_at", "updated_at",
                          "resource_type_associations", "properties", "objects", "tags",
                          "self", "schema"]
    assert body["resource_type_associations"] == FULL["resource_type_associations"]
    assert body["objects"] == FULL["objects"]
    assert body["properties"] == {"cpu": {"type": "integer", "title": "CPU", "minimum": 1,
                                          "maximum": 8}}
    assert body["self"] == f"{NS}/Test::Full"
    assert body["schema"] == "/v2/schemas/metadefs/namespace"


async def test_show_namespace_with_contents_and_prefix(api):
    await make_full(api)
    shown = (await api.get(f"{NS}/Test::Full")).json()
    assert shown["objects"][0]["self"] == f"{NS}/Test::Full/objects/Obj1"
    assert set(shown["resource_type_associations"][0]) == {
        "name", "prefix", "properties_target", "created_at", "updated_at"}
    assert shown["tags"] == [{"name": "t1"}, {"name": "t2"}]
    prefixed = (await api.get(f"{NS}/Test::Full?resource_type=OS::Glance::Image")).json()
    assert list(prefixed["properties"]) == ["hw_cpu"]
    assert prefixed["objects"][0]["required"] == ["hw_a"]
    assert list(prefixed["objects"][0]["properties"]) == ["hw_a"]
    other = (await api.get(f"{NS}/Test::Full?resource_type=OS::Nova::Flavor")).json()
    assert list(other["properties"]) == ["cpu"]


async def test_minimal_namespace_defaults(api):
    r = await api.post(NS, {"namespace": "Bare"})
    body = r.json()
    assert r.status == 201
    assert body["visibility"] == "private" and body["protected"] is False
    assert "display_name" not in body and "owner" not in body    # unset fields are omitted


async def test_namespace_create_errors(api):
    await make_full(api)
    r = await api.post(NS, FULL)
    assert r.status == 409
    assert message(r).startswith("The metadata definition namespace=Test::Full already exists.")
    cases = [
        ({"namespace": "x" * 81}, "is too long"),
        ({"namespace": "A", "visibility": "shared"}, "'shared' is not one of"),
        ({"namespace": "A", "color": "red"}, "Additional properties are not allowed"),
        ({"display_name": "no name"}, "'namespace' is a required property"),
        ({"namespace": "A", "protected": "yes"}, "is not of type 'boolean'"),
        ({"namespace": "A", "properties": {"p": {"type": "integer"}}},
         "'title' is a required property"),
        ({"namespace": "A", "properties": {"p": {"title": "P", "type": "decimal"}}},
         "'decimal' is not one of"),
        ({"namespace": "A", "properties": {"p": {"title": "P", "type": "string",
                                                 "pattern": "[a-"}}},
         "is not a valid regular expression"),
        ({"namespace": "A", "properties": {"p": {"title": "P", "type": "integer",
                                                 "minimum": 9, "maximum": 1}}},
         "minimum 9 is greater than maximum 1"),
        ({"namespace": "A", "properties": {"p": {"title": "P", "type": "integer",
                                                 "enum": [1, "two"]}}},
         "enum value 'two' is not of type 'integer'"),
        ({"namespace": "A", "objects": [{"name": "o", "properties": {
            "p": {"title": "P"}}}]}, "'type' is a required property"),
    ]
    for body, expected in cases:
        r = await api.post(NS, body)
        assert r.status == 400, (body, r.body)
        assert expected in message(r), (body, message(r))
    r = await api.post(NS, {"namespace": "A", "self": "/x"})
    assert r.status == 403 and "Attribute 'self' is read-only." in message(r)
    r = await api.post(NS, [1])
    assert r.status == 400
    r = await api.request("POST", NS, b"{nope", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "Malformed JSON" in message(r)
    r = await api.post(NS, {**FULL, "namespace": "Dup", "objects": [{"name": "o"}, {"name": "o"}]})
    assert r.status == 409
    assert (await api.get(f"{NS}/Dup")).status == 404     # nothing of a refused create is kept


async def test_list_namespaces_filters_sort_pagination(api):
    for i, vis in enumerate(["public", "private", "public"]):
        await api.post(NS, {"namespace": f"N{i}", "display_name": f"z{2 - i}", "visibility": vis})
    await api.post(f"{NS}/N1/resource_types", {"name": "OS::Cinder::Volume"})
    names = lambda r: [n["namespace"] for n in r.json()["namespaces"]]  # noqa: E731
    r = await api.get(NS)
    assert names(r) == ["N2", "N1", "N0"]          # created_at desc by default
    assert r.json()["first"] == NS and "next" not in r.json()
    assert r.json()["schema"] == "/v2/schemas/metadefs/namespaces"
    assert "properties" not in r.json()["namespaces"][0]
    assert names(await api.get(f"{NS}?visibility=private")) == ["N1"]
    assert names(await api.get(f"{NS}?sort_key=display_name&sort_dir=asc")) == ["N2", "N1", "N0"]
    assert names(await api.get(f"{NS}?sort_key=namespace&sort_dir=asc")) == ["N0", "N1", "N2"]
    assert names(await api.get(f"{NS}?resource_types=OS::Cinder::Volume,OS::Other")) == ["N1"]
    page = (await api.get(f"{NS}?limit=2&sort_key=namespace&sort_dir=asc")).json()
    assert [n["namespace"] for n in page["namespaces"]] == ["N0", "N1"]
    assert page["next"] == f"{NS}?limit=2&sort_key=namespace&sort_dir=asc&marker=N1"
    assert page["first"] == f"{NS}?limit=2&sort_key=namespace&sort_dir=asc"
    rest = await api.get(page["next"])
    assert names(rest) == ["N2"] and "next" not in rest.json()
    for query, expected in [("sort_dir=up", "Invalid sort direction: up"),
                            ("visibility=shared", "Invalid visibility value: shared"),
                            ("limit=x", "limit param must be an integer"),
                            ("limit=-1", "limit param must be positive"),
                            ("sort_key=color", "Invalid sort key: color")]:
        r = await api.get(f"{NS}?{query}")
        assert r.status == 400 and expected in message(r), (query, r.body)
    r = await api.get(f"{NS}?marker=Nope")
    assert r.status == 404


async def test_update_namespace_and_rename(api):
    await make_full(api)
    await api.post(NS, {"namespace": "Other"})
    r = await api.request("PUT", f"{NS}/Test::Full",
                          json_body={"namespace": "Test::Renamed", "description": "new"})
    assert r.status == 200, r.body
    body = r.json()
    assert body["namespace"] == "Test::Renamed" and body["description"] == "new"
    assert "display_name" not in body          # PUT replaces: absent fields are cleared
    assert body["visibility"] == "private"
    assert "properties" not in body            # the update view has no contents
    assert (await api.get(f"{NS}/Test::Full")).status == 404
    shown = (await api.get(f"{NS}/Test::Renamed")).json()
    assert list(shown["properties"]) == ["cpu"] and shown["tags"]   # contents followed
    r = await api.request("PUT", f"{NS}/Test::Renamed", json_body={"namespace": "Other"})
    assert r.status == 409 and "duplicate metadata definition namespace" in message(r)
    r = await api.request("PUT", f"{NS}/Missing", json_body={"namespace": "Missing"})
    assert r.status == 404 and "Namespace Missing not found" in message(r)
    r = await api.request("PUT", f"{NS}/Other", json_body={"namespace": "Other",
                                                           "created_at": "x"})
    assert r.status == 403
    r = await api.request("PUT", f"{NS}/Other", json_body={"namespace": "Other",
                                                           "visibility": "nope"})
    assert r.status == 400


async def test_delete_namespace_and_protection(api):
    await make_full(api, protected=True)
    for path in ["", "/objects", "/properties", "/tags", "/objects/Obj1", "/properties/cpu",
                 "/tags/t1", "/resource_types/OS::Glance::Image"]:
        r = await api.delete(f"{NS}/Test::Full{path}")
        assert r.status == 403, (path, r.body)
        assert "is protected and cannot be deleted." in message(r)
    await api.request("PUT", f"{NS}/Test::Full", json_body={"namespace": "Test::Full",
                                                            "protected": False})
    r = await api.delete(f"{NS}/Test::Full")
    assert r.status == 204 and r.body == b""
    assert (await api.get(f"{NS}/Test::Full")).status == 404
    r = await api.delete(f"{NS}/Test::Full")
    assert r.status == 404 and "Namespace Test::Full not found" in message(r)
    # a new namespace of the same name starts empty
    await api.post(NS, {"namespace": "Test::Full"})
    assert (await api.get(f"{NS}/Test::Full/objects")).json()["objects"] == []


async def test_delete_all_contents(api):
    await make_full(api)
    for kind in ("objects", "properties", "tags"):
        r = await api.delete(f"{NS}/Test::Full/{kind}")
        assert r.status == 204
    shown = (await api.get(f"{NS}/Test::Full")).json()
    assert not {"objects", "properties", "tags"} & set(shown)
    assert shown["resource_type_associations"]      # associations stay


async def test_objects(api):
    await make_full(api)
    base = f"{NS}/Test::Full/objects"
    r = await api.post(base, {"name": "Obj2", "properties": {"b": {"title": "B",
                                                                    "type": "boolean"}}})
    assert r.status == 201
    assert list(r.json()) == ["name", "properties", "created_at", "updated_at", "self",
                              "schema"]
    listed = (await api.get(base)).json()
    assert [o["name"] for o in listed["objects"]] == ["Obj1", "Obj2"]
    # stored objects show `required` and `properties` even when unset (Glance: [] and {})
    r = await api.post(base, {"name": "Bare"})
    assert list(r.json()) == ["name", "created_at", "updated_at", "self", "schema"]
    bare = (await api.get(f"{base}/Bare")).json()
    assert bare["required"] == [] and bare["properties"] == {} and "description" not in bare
    assert (await api.delete(f"{base}/Bare")).status == 204
    assert listed["schema"] == "v2/schemas/metadefs/objects"     # sic: Glance's value
    shown = (await api.get(f"{base}/Obj1")).json()
    assert shown["required"] == ["a"] and shown["schema"] == "/v2/schemas/metadefs/object"
    r = await api.request("PUT", f"{base}/Obj1", json_body={"name": "Obj3",
                                                            "description": "renamed"})
    assert r.status == 200 and r.json()["name"] == "Obj3"
    assert list(r.json()) == ["name", "description", "created_at", "updated_at", "self",
                              "schema"]
    assert r.json()["created_at"] == shown["created_at"]
    assert (await api.get(f"{base}/Obj1")).status == 404
    r = await api.request("PUT", f"{base}/Obj3", json_body={"name": "Obj2"})
    assert r.status == 409
    r = await api.post(base, {"name": "Obj2"})
    assert r.status == 409 and "already exists in namespace=Test::Full" in message(r)
    r = await api.post(base, {"description": "no name"})
    assert r.status == 400 and "'name' is a required property" in message(r)
    r = await api.post(base, {"name": "o", "properties": {"p": {"title": "P",
                                                               "type": "string",
                                                               "minLength": -1}}})
    assert r.status == 400
    r = await api.post(base, {"name": "o", "self": "x"})
    assert r.status == 403
    r = await api.get(f"{base}/Nope")
    assert r.status == 404
    assert message(r).startswith("The metadata definition object with name=Nope was not found")
    assert (await api.delete(f"{base}/Obj3")).status == 204
    assert (await api.delete(f"{base}/Obj3")).status == 404
    assert (await api.get(f"{NS}/Nope/objects")).status == 404


async def test_properties(api):
    await make_full(api)
    base = f"{NS}/Test::Full/properties"
    r = await api.post(base, {"name": "mem", "title": "Mem", "type": "string",
                              "pattern": "^[0-9]+$", "maxLength": 5})
    assert r.status == 201
    assert r.body == (b'{"name": "mem", "type": "string", "title": "Mem", '
                      b'"pattern": "^[0-9]+$", "maxLength": 5}')      # Glance's bytes
    listed = (await api.get(base)).json()
    assert list(listed["properties"]) == ["cpu", "mem"]
    assert (await api.get(f"{base}/mem")).json()["title"] == "Mem"
    r = await api.get(f"{base}/hw_cpu?resource_type=OS::Glance::Image")
    assert r.status == 200 and r.json()["name"] == "hw_cpu"
    r = await api.get(f"{base}/cpu?resource_type=OS::Glance::Image")
    assert r.status == 404 and "does not start with the expected resource type" in message(r)
    r = await api.request("PUT", f"{base}/mem", json_body={"name": "memory", "title": "M",
                                                           "type": "integer"})
    assert r.status == 200 and r.json() == {"name": "memory", "type": "integer", "title": "M"}
    r = await api.request("PUT", f"{base}/memory", json_body={"name": "cpu", "title": "M",
                                                              "type": "integer"})
    assert r.status == 409
    for body, expected in [({"name": "x", "type": "string"}, "'title' is a required"),
                           ({"title": "x", "type": "string"}, "'name' is a required"),
                           ({"name": "x", "title": "x", "type": "string", "extra": 1},
                            "Additional properties are not allowed"),
                           ({"name": "x", "title": "x", "type": "string", "default": 3},
                            "default 3 is not of type 'string'"),
                           ({"name": "x", "title": "x", "type": "string",
                             "items": {"type": "string"}}, "'items' is only allowed")]:
        r = await api.post(base, body)
        assert r.status == 400 and expected in message(r), (body, r.body)
    r = await api.post(base, {"name": "cpu", "title": "C", "type": "integer"})
    assert r.status == 409
    assert (await api.delete(f"{base}/cpu")).status == 204
    r = await api.get(f"{base}/cpu")
    assert r.status == 404 and "property with name=cpu was not found" in message(r)


async def test_tags(api):
    await make_full(api)
    base = f"{NS}/Test::Full/tags"
    r = await api.post(f"{base}/t3")
    assert r.status == 201 and list(r.json()) == ["name", "created_at", "updated_at"]
    r = await api.post(f"{base}/T3")
    assert r.status == 409 and "case insensitive" in message(r)
    r = await api.post(base, {"tags": [{"name": "t4"}]},
                       headers={"X-Openstack-Append": "True"})
    assert r.status == 201 and r.json() == {"tags": [{"name": "t4"}]}
    assert [t["name"] for t in (await api.get(base)).json()["tags"]] == ["t1", "t2", "t3", "t4"]
    r = await api.post(base, {"tags": [{"name": "solo"}, {"name": "pair"}]})
    assert r.status == 201
    assert (await api.get(base)).json() == {"tags": [{"name": "pair"}, {"name": "solo"}]}
    r = await api.post(base, {"tags": [{"name": "d"}, {"name": "D"}]})
    assert r.status == 409
    assert [t["name"] for t in (await api.get(base)).json()["tags"]] == ["pair", "solo"]
    for bad in [{"tags": "x"}, {"tags": [{"nom": "x"}]}, {"other": []}]:
        assert (await api.post(base, bad)).status == 400
    r = await api.post(f"{base}/{'x' * 81}")
    assert r.status == 400 and "is too long" in message(r)
    r = await api.request("PUT", f"{base}/solo", json_body={"name": "single"})
    assert r.status == 200 and r.json()["name"] == "single"
    r = await api.request("PUT", f"{base}/single", json_body={"name": "pair"})
    assert r.status == 409
    r = await api.request("PUT", f"{base}/single", json_body={"name": "s",
                                                              "created_at": "now"})
    assert r.status == 403
    assert (await api.get(f"{base}/single")).json()["name"] == "single"
    assert (await api.delete(f"{base}/single")).status == 204
    r = await api.get(f"{base}/single")
    assert r.status == 404 and "tag with name=single was not found" in message(r)


async def test_resource_types_and_associations(api):
    await make_full(api)
    base = f"{NS}/Test::Full/resource_types"
    r = await api.post(base, {"name": "OS::Nova::Flavor", "prefix": "hw:"})
    assert r.status == 201
    assert list(r.json()) == ["name", "prefix", "created_at", "updated_at"]
    r = await api.post(base, {"name": "OS::Nova::Flavor"})
    assert r.status == 409 and "resource-type=OS::Nova::Flavor" in message(r)
    r = await api.post(base, {"prefix": "x"})
    assert r.status == 400
    r = await api.post(base, {"name": "OS::X", "colour": "blue"})
    assert r.status == 400
    listed = (await api.get(base)).json()["resource_type_associations"]
    assert [(a["name"], a.get("prefix")) for a in listed] == [("OS::Glance::Image", "hw_"),
                                                             ("OS::Nova::Flavor", "hw:")]
    types = (await api.get("/v2/metadefs/resource_types")).json()["resource_types"]
    assert [t["name"] for t in types] == ["OS::Glance::Image", "OS::Nova::Flavor"]
    assert (await api.delete(f"{base}/OS::Nova::Flavor")).status == 204
    r = await api.delete(f"{base}/OS::Nova::Flavor")
    assert r.status == 404 and "association of resource-type=OS::Nova::Flavor" in message(r)
    r = await api.delete(f"{base}/OS::Never")
    assert r.status == 404 and "resource-type with name=OS::Never, was not found" in message(r)
    # the resource type itself stays known
    types = (await api.get("/v2/metadefs/resource_types")).json()["resource_types"]
    assert "OS::Nova::Flavor" in [t["name"] for t in types]


async def test_schemas(api):
    lengths = {"namespace": 3100, "namespaces": 3396, "resource_type": 1260,
               "resource_types": 1588, "property": 1397, "properties": 1701, "object": 2026,
               "objects": 2316, "tag": 388, "tags": 672}   # Glance 33's Content-Length
    assert set(NAMES) == set(lengths)
    for name, length in lengths.items():
        r = await api.get(f"/v2/schemas/metadefs/{name}")
        assert r.status == 200 and len(r.body) == length, name
        assert r.header("Content-Type") == "application/json"
    assert (await api.request("POST", "/v2/schemas/metadefs/tag")).status == 405
    assert (await api.get("/v2/schemas/metadefs/nope")).status == 404


async def test_methods_and_bodies(api):
    await make_full(api)
    r = await api.request("PATCH", f"{NS}/Test::Full")
    assert r.status == 405 and r.header("Allow") == "GET, PUT, DELETE"
    r = await api.request("DELETE", f"{NS}/Test::Full", b'{"x": 1}',
                          headers={"Content-Type": "application/json"})
    assert r.status == 400     # a body is not expected


# -- policy (trusted headers: Glance's default metadefs rules) -----------------------------
async def test_policy_reader_member_admin(trusted, identity):
    admin = trusted.as_(**identity("adminproj", "admin"))
    reader = trusted.as_(**identity("p1", "reader"))
    stranger = trusted.as_(**identity("p2", "reader,member"))
    nobody = trusted.as_(**identity("p1", ""))
    assert (await admin.post(NS, {"namespace": "Pub", "visibility": "public",
                                  "owner": "p9"})).status == 201
    assert (await admin.post(NS, {"namespace": "Mine", "owner": "p1",
                                  "tags": [{"name": "t"}]})).status == 201
    assert (await admin.post(NS, {"namespace": "Hidden", "owner": "p9"})).status == 201
    # reads
    seen = lambda r: sorted(n["namespace"] for n in r.json()["namespaces"])  # noqa: E731
    assert seen(await reader.get(NS)) == ["Mine", "Pub"]
    assert seen(await stranger.get(NS)) == ["Pub"]
    assert seen(await admin.get(NS)) == ["Hidden", "Mine", "Pub"]
    assert (await nobody.get(NS)).status == 403
    assert (await reader.get(f"{NS}/Mine/tags")).status == 200
    r = await stranger.get(f"{NS}/Mine")
    assert r.status == 404 and "Mine" not in r.body.decode()       # hidden, not forbidden
    assert (await stranger.get(f"{NS}/Mine/tags/t")).status == 404
    assert (await reader.get("/v2/metadefs/resource_types")).status == 200
    # writes are admin-only: 403 on a namespace the caller can read, 404 otherwise
    r = await reader.post(NS, {"namespace": "New"})
    assert r.status == 403
    assert "You are not authorized to complete add_metadef_namespace action." in message(r)
    r = await reader.post(f"{NS}/Pub/tags/x")
    assert r.status == 403 and "add_metadef_tag" in message(r)
    r = await reader.delete(f"{NS}/Mine")
    assert r.status == 403 and "delete_metadef_namespace" in message(r)
    r = await stranger.delete(f"{NS}/Hidden")
    assert r.status == 404 and "Namespace Hidden not found" in message(r)
    r = await stranger.request("PUT", f"{NS}/Pub", json_body={"namespace": "Pub"})
    assert r.status == 403 and "modify_metadef_namespace" in message(r)
    assert (await admin.delete(f"{NS}/Hidden")).status == 204


async def test_owner_defaults_to_callers_project(trusted, identity):
    admin = trusted.as_(**identity("adminproj", "admin"))
    r = await admin.post(NS, {"namespace": "Owned"})
    assert r.json()["owner"] == "adminproj"
    r = await admin.request("PUT", f"{NS}/Owned", json_body={"namespace": "Owned"})
    assert r.json()["owner"] == "adminproj"


async def test_errors_render_like_glance(api):
    r = await api.get(f"{NS}/Missing", headers={"Accept": "text/plain"})
    assert r.status == 404
    assert r.body.startswith(b"404 Not Found\n\nMetadata definition namespace=Missing was "
                             b"not found.")
    assert r.header("Content-Type") == "text/plain; charset=UTF-8"
    r = await api.get(f"{NS}/Missing")
    assert json.loads(r.body)["title"] == "Not Found"


@pytest.mark.parametrize("count", [40])
async def test_listing_many_pages_covers_all_once(api, count):
    for i in range(count):
        await api.post(NS, {"namespace": f"ns{i:03d}", "visibility": "public"})
    seen, url = [], f"{NS}?limit=7&sort_key=namespace"
    while url:
        page = (await api.get(url)).json()
        seen += [n["namespace"] for n in page["namespaces"]]
        url = page.get("next")
    assert seen == sorted((f"ns{i:03d}" for i in range(count)), reverse=True)


async def test_odd_names_never_give_a_500(api):
    await make_full(api)
    long = "n" * 600
    for path in [f"{NS}/{long}", f"{NS}/{long}/objects", f"{NS}/Test::Full/objects/{long}",
                 f"{NS}/Test::Full/properties/{long}", f"{NS}/Test::Full/tags/{long}",
                 f"{NS}/%C3%A9t%C3%A9", f"{NS}/a%00b", f"{NS}/Test::Full/tags/%F0%9F%8F%B7"]:
        r = await api.get(path)
        assert r.status == 404, (path, r.status, r.body)
    r = await api.delete(f"{NS}/Test::Full/resource_types/{long}")
    assert r.status == 404
    r = await api.post(f"{NS}/Test::Full/tags/{long}")
    assert r.status == 400
    # empty names and text that is not Unicode are refused, never stored
    for body in [{"namespace": ""}, {"namespace": "E", "tags": [{"name": ""}]},
                 {"namespace": "E", "objects": [{"name": ""}]},
                 {"namespace": "E", "properties": {"": {"title": "t", "type": "string"}}}]:
        r = await api.post(NS, body)
        assert r.status == 400, (body, r.body)
    r = await api.request("POST", NS, b'{"namespace": "S", "description": "\\ud800"}',
                          headers={"Content-Type": "application/json"})
    assert r.status == 400 and "not valid Unicode" in message(r)
    r = await api.post(f"{NS}/Test::Full/tags", {"tags": [{"name": ""}]})
    assert r.status == 400
    r = await api.post(f"{NS}/Test::Full/objects", {"name": ""})
    assert r.status == 400
    # a name with odd but valid characters works end to end
    r = await api.post(NS, {"namespace": "Été::Ünïcode 🏷"})
    assert r.status == 201
    r = await api.get(f"{NS}/%C3%89t%C3%A9::%C3%9Cn%C3%AFcode%20%F0%9F%8F%B7")
    assert r.status == 200 and r.json()["namespace"] == "Été::Ünïcode 🏷"


async def test_deeply_nested_defaults_are_refused(api):
    deep: object = "leaf"
    for _ in range(200):
        deep = [deep]
    r = await api.post(NS, {"namespace": "Deep", "properties": {
        "p": {"title": "P", "type": "array", "default": deep}}})
    assert r.status == 400 and "nested more than" in message(r)
    r = await api.post(NS, {"namespace": "Shallow", "properties": {
        "p": {"title": "P", "type": "array", "default": [[1, 2], [3]]}}})
    assert r.status == 201
