# web-download: a real HTTP origin on 127.0.0.1 that the test config allows explicitly; the
# URI filter's refusals (schemes, hosts, ports, address classes), the pinned address, the size
# and time caps, and what each failure leaves behind.
from __future__ import annotations

import hashlib
import os

import pytest

from tessera.http.webdownload import ImportConfig, address_allowed, check_uri

ALLOW = dict(allowed_hosts=("127.0.0.1",), allowed_ports=())


def web(uri: str) -> dict:
    return {"method": {"name": "web-download", "uri": uri}}


async def last_task(client, image_id: str) -> dict:
    return (await client.get(f"/v2/images/{image_id}/tasks")).json()["tasks"][0]


async def test_web_download_streams_into_an_active_image(make_importer, origin, settle):
    data = os.urandom(3 * 1024 * 1024 + 17)
    origin.files["disk.img"] = data
    api = await make_importer(imports=ImportConfig(**ALLOW))
    img = await api.create(name="web")
    r = await api.post(f"/v2/images/{img['id']}/import", web(origin.url("disk.img")))
    assert r.status == 202
    done = await settle(api, img["id"])
    assert done["status"] == "active" and done["size"] == len(data)
    assert done["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert (await api.get(f"/v2/images/{img['id']}/file")).body == data
    task = await last_task(api, img["id"])
    assert task["status"] == "success"
    assert task["input"]["import_req"] == web(origin.url("disk.img"))
    # one request, to the pinned address, with the Host header of the URI
    assert len(origin.requests) == 1
    assert f"Host: 127.0.0.1:{origin.port}" in origin.requests[0]


async def test_chunked_origin(make_importer, origin, settle):
    data = os.urandom(200_000)
    origin.files["c.img"] = data
    api = await make_importer(imports=ImportConfig(**ALLOW))
    img = await api.create()
    await api.post(f"/v2/images/{img['id']}/import", web(origin.url("chunked-c.img")))
    assert (await settle(api, img["id"]))["status"] == "active"
    assert (await api.get(f"/v2/images/{img['id']}/file")).body == data


@pytest.mark.parametrize("uri", [
    "ftp://127.0.0.1/x.img",                 # scheme
    "file:///etc/passwd",
    "http://127.0.0.1/x.img",                # loopback, not allowed by default config
    "http://localhost/x.img",
    "http://169.254.169.254/latest/meta-data",   # link-local (cloud metadata)
    "http://10.0.0.1/x.img",                 # private
    "http://192.168.1.1/x.img",
    "http://[::1]/x.img",
    "http://0.0.0.0/x.img",
    "http://203.0.113.5:8080/x.img",         # port not in 80/443
    "not a uri",
])
async def test_default_filter_refuses(api, uri):
    img = await api.create()
    r = await api.post(f"/v2/images/{img['id']}/import", web(uri))
    assert r.status == 400, uri
    assert f"URI for web-download does not pass filtering: {uri}" in r.json()["message"]
    after = (await api.get(f"/v2/images/{img['id']}")).json()
    assert after["status"] == "queued" and "os_glance_import_task" not in after
    assert (await api.get(f"/v2/images/{img['id']}/tasks")).json() == {"tasks": []}


async def test_allow_list_is_exact(make_importer, origin):
    # 127.0.0.1 is allowed; "localhost" (the same address by name) is not (as in Glance)
    api = await make_importer(imports=ImportConfig(**ALLOW))
    img = await api.create()
    r = await api.post(f"/v2/images/{img['id']}/import",
                       web(origin.url("x", host="localhost")))
    assert r.status == 400
    api2 = await make_importer(imports=ImportConfig(allowed_hosts=("127.0.0.1",),
                                                    allowed_ports=(80, 443)))
    img2 = await api2.create()
    r = await api2.post(f"/v2/images/{img2['id']}/import", web(origin.url("x")))
    assert r.status == 400                                     # port not allowed
    api3 = await make_importer(imports=ImportConfig(allowed_ports=(), disallowed_ports=(
        origin.port,), allowed_hosts=("127.0.0.1",)))
    img3 = await api3.create()
    r = await api3.post(f"/v2/images/{img3['id']}/import", web(origin.url("x")))
    assert r.status == 400                                     # port denied
    assert origin.requests == []


def test_filter_rules_without_io():
    cfg = ImportConfig()
    assert check_uri("https://images.example.org/a.qcow2", cfg) is not None
    assert check_uri("https://images.example.org:8443/a", cfg) is None
    assert check_uri("gopher://images.example.org/", cfg) is None
    assert check_uri("http://evil.example.org/", ImportConfig(
        disallowed_hosts=("evil.example.org",))) is None
    assert check_uri("http://x.example.org/", ImportConfig(
        allowed_schemes=(), disallowed_schemes=("http",))) is None
    # address classes: a public name that resolves to a private address is refused
    assert not address_allowed("10.1.2.3", "images.example.org", cfg)
    assert not address_allowed("::ffff:127.0.0.1", "images.example.org", cfg)
    assert not address_allowed("fe80::1", "images.example.org", cfg)
    assert address_allowed("93.184.216.34", "images.example.org", cfg)
    assert address_allowed("10.1.2.3", "mirror.internal", ImportConfig(
        allowed_hosts=("mirror.internal",)))


async def test_unreachable_url_fails_the_task(make_importer, settle):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed once the block ends: nothing listens
    api = await make_importer(imports=ImportConfig(**ALLOW))
    img = await api.create()
    r = await api.post(f"/v2/images/{img['id']}/import",
                       web(f"http://127.0.0.1:{port}/x.img"))
    assert r.status == 202
    done = await settle(api, img["id"])
    assert done["status"] == "queued" and done["os_glance_failed_import"] == "default"
    task = await last_task(api, img["id"])
    assert task["status"] == "failure" and "cannot reach" in task["message"]


async def test_http_error_and_redirect_fail_the_task(make_importer, origin, settle):
    api = await make_importer(imports=ImportConfig(**ALLOW))
    for name, words in (("missing", "HTTP 404"), ("redirect", "HTTP 302")):
        img = await api.create()
        await api.post(f"/v2/images/{img['id']}/import", web(origin.url(name)))
        assert (await settle(api, img["id"]))["status"] == "queued"
        assert words in (await last_task(api, img["id"]))["message"]
    assert all("169.254" not in r for r in origin.requests[1:])


async def test_size_cap_refuses_and_stores_nothing(make_importer, origin, settle):
    origin.files["big.img"] = os.urandom(600_000)
    origin.files["chunked-big.img"] = origin.files["big.img"]
    api = await make_importer(imports=ImportConfig(**ALLOW, max_download_bytes=500_000))
    for name in ("big.img", "chunked-big.img"):       # announced, then discovered in flight
        img = await api.create()
        await api.post(f"/v2/images/{img['id']}/import", web(origin.url(name)))
        done = await settle(api, img["id"])
        assert done["status"] == "queued" and done["size"] is None
        task = await last_task(api, img["id"])
        assert task["status"] == "failure" and "size cap" in task["message"]
        assert api.engine.chunks.image_chunks(img["id"]) == []


async def test_time_cap(make_importer, origin, settle):
    api = await make_importer(imports=ImportConfig(**ALLOW, read_timeout=0.3))
    img = await api.create()
    await api.post(f"/v2/images/{img['id']}/import", web(origin.url("slow")))
    done = await settle(api, img["id"])
    assert done["status"] == "queued"
    assert "no data for" in (await last_task(api, img["id"]))["message"]


async def test_web_download_needs_queued(make_importer, origin):
    origin.files["a"] = b"a" * 1000
    api = await make_importer(imports=ImportConfig(**ALLOW))
    img = await api.create()
    await api.upload(img["id"], b"z" * 100)
    r = await api.post(f"/v2/images/{img['id']}/import", web(origin.url("a")))
    assert r.status == 409


async def test_legacy_task_create_imports_from_a_url(make_importer, origin, settle):
    data = os.urandom(150_000)
    origin.files["legacy.img"] = data
    api = await make_importer(imports=ImportConfig(**ALLOW))
    body = {"type": "import", "input": {"import_from": origin.url("legacy.img"),
                                        "import_from_format": "raw",
                                        "image_properties": {"name": "legacy",
                                                             "container_format": "bare"}}}
    r = await api.post("/v2/tasks", body)
    assert r.status == 201, r.body
    task = r.json()
    assert task["type"] == "import" and task["status"] == "pending"
    assert r.header("Location") == f"http://127.0.0.1:9292/v2/tasks/{task['id']}"
    done = await settle(api, task["image_id"])
    assert done["status"] == "active" and done["name"] == "legacy"
    assert (await api.get(f"/v2/images/{task['image_id']}/file")).body == data
    shown = (await api.get(f"/v2/tasks/{task['id']}")).json()
    assert shown["status"] == "success" and shown["input"] == body["input"]
    # refusals: schema, filter
    assert (await api.post("/v2/tasks", {"input": {}})).status == 400
    assert (await api.post("/v2/tasks", {"type": "copy", "input": {}})).status == 400
    bad = {"type": "import", "input": {**body["input"],
                                       "import_from": "http://169.254.169.254/x"}}
    assert (await api.post("/v2/tasks", bad)).status == 400
    missing = {"type": "import", "input": {"import_from": origin.url("legacy.img")}}
    assert (await api.post("/v2/tasks", missing)).status == 400


async def test_a_name_is_resolved_once_and_only_its_addresses_are_tried(make_importer, origin, settle):
    """'localhost' allowed by name: resolved once at the import call; the fetch connects to
    those addresses only (IPv6 ::1 first where the resolver says so, then 127.0.0.1)."""
    data = os.urandom(50_000)
    origin.files["n.img"] = data
    api = await make_importer(imports=ImportConfig(allowed_hosts=("localhost",),
                                                   allowed_ports=()))
    img = await api.create()
    r = await api.post(f"/v2/images/{img['id']}/import",
                       web(origin.url("n.img", host="localhost")))
    assert r.status == 202
    assert (await settle(api, img["id"]))["status"] == "active"
    assert (await api.get(f"/v2/images/{img['id']}/file")).body == data
    assert f"Host: localhost:{origin.port}" in origin.requests[-1]
