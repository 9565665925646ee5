# The legacy PATCH operations on /locations: 403 unless show_multiple_locations is on; with
# it, add/replace on a queued image read the origin and answer the image active, add/remove
# on an active image edit the list (remove is admin-only and never the last), and an edited
# list can never change the bytes the image serves (OSSN-0065).
from __future__ import annotations

import hashlib
import os

import pytest

from tessera.http.config import ServerConfig

A = "aaaaaaaa"


@pytest.fixture
async def shown(make_node, origin, loc):
    return await make_node(imports=loc.allow(origin),
                           server=ServerConfig(show_multiple_locations=True))


async def test_refused_while_locations_are_invisible(node, origin):
    img = await node.create()
    r = await node.patch(f"/v2/images/{img['id']}", [
        {"op": "add", "path": "/locations/-", "value": {"url": origin.url("x"),
                                                         "metadata": {}}}])
    assert r.status == 403 and "locations are invisible" in r.json()["message"]


async def test_add_to_a_queued_image_reads_the_origin(shown, origin):
    data = os.urandom(300_000)
    origin.files["p.raw"] = data
    img = await shown.create()
    r = await shown.patch(f"/v2/images/{img['id']}", [
        {"op": "add", "path": "/locations/-", "value": {
            "url": origin.url("p.raw"), "metadata": {"note": "mirror"},
            "validation_data": {"checksum": hashlib.md5(data).hexdigest()}}}])
    assert r.status == 200, r.body
    body = r.json()
    assert body["status"] == "active" and body["size"] == len(data)
    assert body["locations"] == [{"url": origin.url("p.raw"),
                                  "metadata": {"note": "mirror", "store": "web"}}]
    assert (await shown.get(f"/v2/images/{img['id']}/file")).body == data
    # wrong validation data: the image stays queued, 400
    other = await shown.create()
    r = await shown.patch(f"/v2/images/{other['id']}", [
        {"op": "replace", "path": "/locations", "value": [{
            "url": origin.url("p.raw"), "metadata": {},
            "validation_data": {"os_hash_value": "00" * 64}}]}])
    assert r.status == 400 and "Invalid location" in r.json()["message"]
    assert (await shown.get(f"/v2/images/{other['id']}")).json()["status"] == "queued"


async def test_edit_the_locations_of_an_active_image(shown, origin, loc):
    data = os.urandom(400_000)
    img = await loc.register(shown, origin, "one.raw", data)
    origin.files["two.raw"] = os.urandom(len(data))          # NOT the same bytes
    path = f"/v2/images/{img['id']}"
    r = await shown.patch(path, [{"op": "add", "path": "/locations/0", "value": {
        "url": origin.url("two.raw"), "metadata": {}}}])
    assert r.status == 200
    assert [x["url"] for x in r.json()["locations"]] == [origin.url("two.raw"),
                                                         origin.url("one.raw")]
    dup = await shown.patch(path, [{"op": "add", "path": "/locations/-", "value": {
        "url": origin.url("one.raw"), "metadata": {}}}])
    assert dup.status == 400
    bad = await shown.patch(path, [{"op": "add", "path": "/locations/-", "value": {
        "url": "file:///etc/passwd", "metadata": {}}}])
    assert bad.status == 400 and "Invalid location" in bad.json()["message"]
    mismatch = await shown.patch(path, [{"op": "add", "path": "/locations/-", "value": {
        "url": origin.url("three.raw"), "metadata": {},
        "validation_data": {"checksum": "0" * 32}}}])
    assert mismatch.status == 409
    # OSSN-0065: remove the original; the first location now has other bytes, yet the image
    # serves its own (every chunk fetched is verified against the manifest)
    r = await shown.patch(path, [{"op": "remove", "path": "/locations/1"}])
    assert r.status == 200 and len(r.json()["locations"]) == 1
    await loc.evict(shown)
    pulled = await shown.get(f"{path}/file")
    assert pulled.status == 503 or pulled.body != origin.files["two.raw"]
    assert (await shown.get(path)).json()["os_hash_value"] == img["os_hash_value"]
    last = await shown.patch(path, [{"op": "remove", "path": "/locations/0"}])
    assert last.status == 403 and "last location" in last.json()["message"]
    empty = await shown.patch(path, [{"op": "replace", "path": "/locations", "value": []}])
    assert empty.status == 403
    r = await shown.patch(path, [{"op": "replace", "path": "/locations", "value": [
        {"url": origin.url("one.raw"), "metadata": {}}]}])
    assert r.status == 200
    assert (await shown.get(f"{path}/file")).body == data


async def test_remove_is_admin_only(make_node, origin, loc):
    node = await make_node(imports=loc.allow(origin), server=ServerConfig(
        auth="trusted-headers", show_multiple_locations=True))
    owner = node.as_(**loc.identity(A))
    origin.files["o.raw"] = os.urandom(100_000)
    img = await owner.create()
    r = await owner.patch(f"/v2/images/{img['id']}", [
        {"op": "add", "path": "/locations/-", "value": {"url": origin.url("o.raw"),
                                                         "metadata": {}}}])
    assert r.status == 200 and r.json()["status"] == "active"
    origin.files["p.raw"] = origin.files["o.raw"]
    await owner.patch(f"/v2/images/{img['id']}", [
        {"op": "add", "path": "/locations/-", "value": {"url": origin.url("p.raw"),
                                                         "metadata": {}}}])
    r = await owner.patch(f"/v2/images/{img['id']}", [
        {"op": "remove", "path": "/locations/0"}])
    assert r.status == 403 and "delete_image_location" in r.json()["message"]
    admin = node.as_(**loc.identity("ops", roles="admin"))
    r = await admin.patch(f"/v2/images/{img['id']}", [
        {"op": "remove", "path": "/locations/0"}])
    assert r.status == 200 and [x["url"] for x in r.json()["locations"]] == \
        [origin.url("p.raw")]
