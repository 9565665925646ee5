# Behaviour checks modelled on the transcript's normal and error cases: routing errors (404,
# 405 + Allow, HEAD routed nowhere, 501), body rules, error bodies negotiated on Accept, and
# garbage input that must never produce a 500.
import json
import os
import random
import uuid

import pytest


async def test_unknown_route_and_method_errors(api):
    r = await api.get("/v2/nothing-here")
    assert r.status == 404
    assert r.json() == {"message": "The resource could not be found.<br /><br />\n\n\n",
                        "code": "404 Not Found", "title": "Not Found"}
    r = await api.delete("/v2/images")
    assert r.status == 405 and r.header("Allow") == "GET, POST"
    assert r.json()["message"] == ("The method DELETE is not allowed for this resource. "
                                   "<br /><br />\n")
    r = await api.request("BREW", "/v2/images")
    assert r.status == 501


async def test_head_is_routed_nowhere(api):
    img = await api.create(name="h")
    r = await api.request("HEAD", f"/v2/images/{img['id']}/file")
    assert r.status == 405 and r.header("Allow") == "GET, PUT"
    assert r.header("Content-Type") == "text/html; charset=UTF-8" and r.body == b""
    r = await api.request("HEAD", f"/v2/images/{img['id']}")
    assert r.status == 405 and r.header("Allow") == "GET, PATCH, DELETE"
    r = await api.request("POST", f"/v2/images/{img['id']}/members/x")
    assert r.status == 405 and r.header("Allow") == "GET, PUT, DELETE"


async def test_body_on_a_get_is_400(api):
    r = await api.request("GET", "/v2/images", b"x")
    assert r.status == 400
    assert r.json()["message"].startswith("A body is not expected with this request.")


@pytest.mark.parametrize("accept, ctype, start", [
    ("application/json", "application/json", b"{"),
    ("*/*", "text/html; charset=UTF-8", b"<html>"),
    ("text/html", "text/html; charset=UTF-8", b"<html>"),
    (None, "text/plain; charset=UTF-8", b"404 Not Found\n\nNo image found with ID "),
    ("text/plain", "text/plain; charset=UTF-8", b"404 Not Found\n\n"),
])
async def test_error_bodies_follow_accept(api, accept, ctype, start):
    r = await api.get(f"/v2/images/{uuid.uuid4()}", headers={"Accept": accept})
    assert r.status == 404 and r.header("Content-Type") == ctype
    assert r.body.startswith(start)


ROUTES = [
    ("POST", "/v2/images", "application/json"),
    ("PATCH", "/v2/images/{id}", "application/openstack-images-v2.1-json-patch"),
    ("PATCH", "/v2/images/{id}", "application/openstack-images-v2.0-json-patch"),
    ("POST", "/v2/images/{id}/members", "application/json"),
    ("PUT", "/v2/images/{id}/members/{member}", "application/json"),
]
GARBAGE = [
    b"\xff\xfe\x00", b"[", b"{}", b"[]", b"null", b"1e999", b'"s"', b"[[[[[[[[[[]]]]]]]]]]",
    b"[" * 100000 + b"]" * 100000, b'{"name": {"a": 1}}', b'[{"op": null, "path": null}]',
    b'[{"op": "add", "path": "/", "value": 1}]', b'[{"op": "add", "path": "/~2", "value": 1}]',
    b'[{"op": "replace", "path": "/tags", "value": [1, 2]}]',
    b'[{"op": "replace", "path": "/min_ram", "value": "many"}]',
    b'[{"op": "add", "path": "/locations/-", "value": {"url": "x"}}]',
    b'[{"add": 5, "value": 1}]', b'{"member": 7}', b'{"member": ["x"]}', b'{"status": 7}',
    b'{"id": "not-a-uuid"}', b'{"id": 7}', b'{"tags": "abc"}', b'{"tags": [1]}',
    b'{"visibility": "everyone"}', b'{"protected": "yes"}', b'{"min_disk": -1}',
    b'{"name": "' + b"x" * 300 + b'"}', b'{"' + b"k" * 300 + b'": "v"}',
    b'{"os_glance_foo": "x"}', b'{"owner": 5}', b'{"min_ram": 1.5}', b'{"min_ram": true}',
]


async def test_garbage_bodies_never_give_500(api):
    img = await api.create(name="target")
    url_params = {"id": img["id"], "member": "m" * 8}
    rng = random.Random(1)
    bodies = GARBAGE + [os.urandom(rng.randrange(1, 200)) for _ in range(20)]
    for method, pattern, ctype in ROUTES:
        for body in bodies:
            r = await api.request(method, pattern.format(**url_params), body,
                                  headers={"Content-Type": ctype})
            assert r.status < 500, (method, pattern, body[:60], r.body[:300])
            if r.status >= 400:
                assert set(r.json()) == {"message", "code", "title"}


async def test_garbage_queries_never_give_500(api):
    await api.create(name="q")
    queries = ["limit=", "limit=1e3", "marker=", "marker=not-a-uuid", "sort=", "sort=:",
               "sort=name:asc:desc", "sort_key=", "sort_dir=", "tag=", "name=in:",
               'name=in:""', "name=in:,,", "size_min=", "size_max=-1", "created_at=",
               "created_at=gt:", "updated_at=lt:notadate", "member_status=",
               "visibility=", "os_hidden=", "protected=", "id=in:x,y", "owner=",
               "virtual_size_min=x", "min_ram_max=3", "%ff=%fe", "limit=99999999999999999999"]
    for q in queries:
        r = await api.get("/v2/images?" + q)
        assert r.status in (200, 400), (q, r.body[:300])


async def test_garbage_ranges_never_give_500(api):
    img = await api.create(name="r")
    await api.upload(img["id"], b"0123456789")
    for header in ("bytes=", "bytes=-", "bytes=a-b", "bytes=5", "bytes=--1", "bytes=9-0",
                   "bytes=99999999999999999999999-", "BYTES=1-2", "bytes = 1 - 2"):
        r = await api.get(f"/v2/images/{img['id']}/file", headers={"Range": header})
        assert r.status in (206, 400, 416), (header, r.status)
    for header in ("bytes 1-2/3", "bytes 2-1/*", "bytes */10", "bytes 0-100/*", "junk"):
        r = await api.get(f"/v2/images/{img['id']}/file", headers={"Content-Range": header})
        assert r.status in (206, 416), (header, r.status)


async def test_json_errors_are_flat_json(api):
    r = await api.post("/v2/images", {"name": "bad", "foo": 1})
    body = json.loads(r.body)
    assert body["code"] == "400 Bad Request" and body["title"] == "Bad Request"


async def test_odd_path_parameters_never_give_500(api):
    img = await api.create(name="p")
    iid = img["id"]
    await api.post(f"/v2/images/{iid}/members", {"member": "ok"})
    odd = ["x" * 300, "\u00e9\u6771", "%", "..", "a b", "\x7f", "0" * 32, iid.upper()]
    for value in odd:
        for method, path in (("GET", f"/v2/images/{iid}/members/{value}"),
                             ("DELETE", f"/v2/images/{iid}/members/{value}"),
                             ("PUT", f"/v2/images/{iid}/tags/{value}"),
                             ("DELETE", f"/v2/images/{iid}/tags/{value}"),
                             ("GET", f"/v2/images/{value}"),
                             ("GET", f"/v2/images/{value}/file"),
                             ("DELETE", f"/v2/images/{value}")):
            r = await api.request(method, path)
            assert r.status < 500, (method, path, r.body[:200])
        r = await api.post(f"/v2/images/{iid}/members", {"member": value})
        assert r.status < 500, (value, r.body[:200])
