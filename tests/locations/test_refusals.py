# What the locations API refuses: URLs failing web-download's filter (loopback, private and
# link-local addresses unless allowed, ports, schemes), sites without an http store, and
# callers without Glance's location policies (add_image_location, fetch_image_location).
from __future__ import annotations

import os

from tessera.engine.stores import StoreConfig
from tessera.http.config import ServerConfig
from tessera.http.webdownload import ImportConfig

A, B = "aaaaaaaa", "bbbbbbbb"


async def test_forbidden_urls(make_node, origin, loc):
    node = await make_node(imports=ImportConfig())          # loopback not allowed here
    origin.files["x"] = b"x" * 1000
    img = await node.create()
    for url in (origin.url("x"), f"http://localhost:{origin.port}/x", "http://10.1.2.3/x",
                "http://169.254.169.254/latest/meta-data", "http://[::1]/x",
                "http://127.0.0.1:22/x", "http://0.0.0.0/x"):
        r = await node.post(f"/v2/images/{img['id']}/locations", {"url": url})
        assert r.status == 400, (url, r.body)
        assert "does not pass filtering" in r.json()["message"]
    for url in ("ftp://example.com/x", "file:///etc/passwd", "rbd://fsid/pool/img/snap",
                "swift+config://ref/c/o"):
        r = await node.post(f"/v2/images/{img['id']}/locations", {"url": url})
        assert r.status == 403 and "http store must be enabled" in r.json()["message"]
    assert origin.seen == []                                 # nothing was fetched
    shown = (await node.get(f"/v2/images/{img['id']}")).json()
    assert shown["status"] == "queued" and "os_glance_import_task" not in shown


async def test_allowed_host_but_not_its_port(make_node, origin, loc):
    node = await make_node(imports=ImportConfig(allowed_hosts=("127.0.0.1",)))
    img = await node.create()
    r = await node.post(f"/v2/images/{img['id']}/locations", {"url": origin.url("x")})
    assert r.status == 400 and origin.seen == []


async def test_no_http_store(make_node, origin, loc):
    for stores in ((), (StoreConfig("only", default=True),)):
        node = await make_node(imports=loc.allow(origin), stores=stores)
        img = await node.create()
        r = await node.post(f"/v2/images/{img['id']}/locations", {"url": origin.url("x")})
        assert r.status == 403 and "http store must be enabled" in r.json()["message"]


async def test_roles(make_node, origin, loc):
    node = await make_node(imports=loc.allow(origin),
                           server=ServerConfig(auth="trusted-headers"))
    owner = node.as_(**loc.identity(A))
    origin.files["r.raw"] = data = os.urandom(100_000)
    img = await owner.create()
    url = {"url": origin.url("r.raw")}
    r = await node.as_(**loc.identity(A, roles="reader")).post(
        f"/v2/images/{img['id']}/locations", url)
    assert r.status == 403 and "add_image_location" in r.json()["message"]
    r = await node.as_(**loc.identity(B)).post(f"/v2/images/{img['id']}/locations", url)
    assert r.status == 404                                   # another project's private image
    r = await owner.post(f"/v2/images/{img['id']}/locations", url)
    assert r.status == 202
    done = await loc.settle(owner, img["id"])
    assert done["status"] == "active" and done["owner"] == A
    task = (await owner.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"][0]
    assert task["owner"] == A and task["type"] == "location_import"
    path = f"/v2/images/{img['id']}/locations"
    r = await owner.get(path)
    assert r.status == 403 and "fetch_image_location" in r.json()["message"]
    assert (await node.as_(**loc.identity(B)).get(path)).status == 404
    for who in (loc.identity(A, roles="service"), loc.identity(B, roles="admin")):
        r = await node.as_(**who).get(path)
        assert r.status == 200 and r.json()[0]["url"] == origin.url("r.raw")
    r = await owner.get(f"/v2/images/{img['id']}/file")
    assert r.body == data


async def test_service_role_may_register_for_an_owner(make_node, origin, loc):
    node = await make_node(imports=loc.allow(origin),
                           server=ServerConfig(auth="trusted-headers"))
    owner = node.as_(**loc.identity(A))
    img = await owner.create(visibility="community")
    origin.files["s.raw"] = os.urandom(50_000)
    service = node.as_(**loc.identity("svc", roles="service"))
    r = await service.post(f"/v2/images/{img['id']}/locations", {"url": origin.url("s.raw")})
    assert r.status == 202
    assert (await loc.settle(owner, img["id"]))["status"] == "active"
