# Authentication modes (noauth, trusted-headers, tokens) and Glance's default policy matrix:
# admin, member, reader, another project; invisible images are 404, visible-but-forbidden 403.
import json

import pytest

from tessera.http.auth import AuthConfigError, Authenticator, load_tokens
from tessera.http.config import ServerConfig

A, B = "a" * 32, "b" * 32
UNAUTHORIZED = ("This server could not verify that you are authorized to access the document "
                "you requested. Either you supplied the wrong credentials (e.g., bad "
                "password), or your browser does not understand how to supply the credentials "
                "required.<br /><br />\n\n\n")


async def test_noauth_is_admin_without_project(api):
    img = await api.create(name="x", visibility="public")
    assert img["owner"] is None and img["visibility"] == "public"


async def test_trusted_headers_require_confirmed_identity(trusted, identity):
    r = await trusted.get("/v2/images")
    assert r.status == 401 and r.json()["message"] == UNAUTHORIZED
    r = await trusted.get("/v2/images", headers={**identity(A), "X-Identity-Status": "Invalid"})
    assert r.status == 401
    # Discovery needs no credentials, as in Glance's pipeline.
    assert (await trusted.get("/versions")).status == 200
    assert (await trusted.get("/")).status == 300
    assert (await trusted.get("/healthcheck")).status == 200


async def test_trusted_headers_roles_and_legacy_tenant_header(trusted):
    c = trusted.as_(**{"X-Identity-Status": "Confirmed", "X-Roles": " Member , READER",
                       "X-Tenant-Id": A, "X-User-Id": "u1"})
    img = await c.create(name="mine")
    assert img["owner"] == A


async def test_percent_encoded_identity_headers(trusted):
    # python-glanceclient percent-encodes header values: "member,reader" -> "member%2Creader"
    c = trusted.as_(**{"X-Identity-Status": "Confirmed", "X-Roles": "member%2Creader",
                       "X-Project-Id": A, "X-User-Id": "u%20x"})
    img = await c.create(name="encoded")
    assert img["owner"] == A


async def test_reader_cannot_create_and_member_cannot_publicize(trusted, identity):
    reader = trusted.as_(**identity(A, "reader"))
    r = await reader.post("/v2/images", {"name": "nope"})
    assert r.status == 403
    assert r.json()["message"].startswith("You are not authorized to complete add_image action.")
    member = trusted.as_(**identity(A))
    img = await member.create(name="x")
    r = await member.patch(f"/v2/images/{img['id']}",
                           [{"op": "replace", "path": "/visibility", "value": "public"}])
    assert r.status == 403
    assert r.json()["message"].startswith("You are not authorized to complete publicize_image")
    r = await member.post("/v2/images", {"name": "p", "visibility": "public"})
    assert r.status == 403
    r = await member.post("/v2/images", {"name": "other", "owner": B})
    assert r.status == 403
    r = await member.patch(f"/v2/images/{img['id']}",
                           [{"op": "replace", "path": "/visibility", "value": "community"}])
    assert r.status == 200 and r.json()["visibility"] == "community"


async def test_policy_matrix(trusted, identity):
    admin = trusted.as_(**identity("adminproject", "admin,member,reader"))
    owner = trusted.as_(**identity(A))
    reader = trusted.as_(**identity(A, "reader"))
    other = trusted.as_(**identity(B))
    norole = trusted.as_(**identity(A, ""))
    private = await owner.create(name="private", visibility="private")
    pid = private["id"]
    await owner.upload(pid, b"p" * 100)
    public = await admin.create(name="public", visibility="public")
    await admin.upload(public["id"], b"P" * 100)

    # show
    assert (await owner.get(f"/v2/images/{pid}")).status == 200
    assert (await reader.get(f"/v2/images/{pid}")).status == 200
    assert (await admin.get(f"/v2/images/{pid}")).status == 200
    assert (await other.get(f"/v2/images/{pid}")).status == 404
    assert (await norole.get(f"/v2/images/{pid}")).status == 404   # get_image needs reader
    assert (await other.get(f"/v2/images/{public['id']}")).status == 200
    # list
    assert [i["name"] for i in (await reader.get("/v2/images")).json()["images"]] == \
        ["public", "private"]
    assert [i["name"] for i in (await other.get("/v2/images")).json()["images"]] == ["public"]
    r = await norole.get("/v2/images")
    assert r.status == 403 and "get_images" in r.json()["message"]
    # download: member role needed; readers may look but not download
    assert (await owner.get(f"/v2/images/{pid}/file")).status == 200
    r = await reader.get(f"/v2/images/{pid}/file")
    assert r.status == 403 and "download_image" in r.json()["message"]
    assert (await other.get(f"/v2/images/{pid}/file")).status == 404
    assert (await other.get(f"/v2/images/{public['id']}/file")).status == 200
    # modify / delete / upload: owner project members and admins only
    patch = [{"op": "replace", "path": "/name", "value": "n"}]
    assert (await reader.patch(f"/v2/images/{pid}", patch)).status == 403
    assert (await other.patch(f"/v2/images/{pid}", patch)).status == 404
    assert (await other.patch(f"/v2/images/{public['id']}", patch)).status == 403
    assert (await admin.patch(f"/v2/images/{pid}", patch)).status == 200
    assert (await reader.delete(f"/v2/images/{pid}")).status == 403
    assert (await other.delete(f"/v2/images/{pid}")).status == 404
    fresh = await owner.create(name="fresh")
    r = await reader.put(f"/v2/images/{fresh['id']}/file", b"x",
                         headers={"Content-Type": "application/octet-stream"})
    assert r.status == 403 and "upload_image" in r.json()["message"]
    # owner replace: admin only
    r = await owner.patch(f"/v2/images/{pid}", [{"op": "replace", "path": "/owner",
                                                  "value": B}])
    assert r.status == 403
    r = await admin.patch(f"/v2/images/{pid}", [{"op": "replace", "path": "/owner",
                                                  "value": B}])
    assert r.status == 200 and r.json()["owner"] == B
    assert (await owner.get(f"/v2/images/{pid}")).status == 404
    assert (await other.get(f"/v2/images/{pid}")).status == 200


async def test_deactivated_download_is_403_for_non_admins(trusted, identity):
    owner = trusted.as_(**identity(A))
    admin = trusted.as_(**identity("x", "admin"))
    img = await owner.create(name="d")
    await owner.upload(img["id"], b"d" * 10)
    assert (await owner.post(f"/v2/images/{img['id']}/actions/deactivate")).status == 204
    r = await owner.get(f"/v2/images/{img['id']}/file", headers={"Accept": None})
    assert r.status == 403
    assert r.body.decode() == ("403 Forbidden\n\nThe requested image has been deactivated. "
                               "Image data download is forbidden.\n\n   ")  # 95 bytes, as Glance
    assert (await admin.get(f"/v2/images/{img['id']}/file")).body == b"d" * 10


async def test_community_images(trusted, identity):
    owner = trusted.as_(**identity(A))
    other = trusted.as_(**identity(B))
    img = await owner.create(name="com", visibility="community")
    assert (await other.get(f"/v2/images/{img['id']}")).status == 200
    assert (await other.get("/v2/images")).json()["images"] == []
    names = [i["name"] for i in (await other.get("/v2/images?visibility=community")).json()
             ["images"]]
    assert names == ["com"]
    assert [i["name"] for i in (await owner.get("/v2/images")).json()["images"]] == ["com"]


def write_tokens(path, table) -> str:
    path.write_text(json.dumps(table))
    return str(path)


async def test_tokens_mode(make_api, tmp_path):
    tokens = write_tokens(tmp_path / "tokens.json", {
        "tok-a": {"project_id": A, "user_id": "ua", "roles": ["member"]},
        "tok-admin": {"project_id": "ops", "user_id": "root", "roles": ["admin"]},
        "tok-b": {"project_id": B, "user_id": "ub", "roles": ["reader"]},
    })
    client = await make_api(server=ServerConfig(auth="tokens", tokens_file=tokens))
    assert (await client.get("/v2/images")).status == 401
    assert (await client.get("/v2/images", headers={"X-Auth-Token": "nope"})).status == 401
    a = client.as_(**{"X-Auth-Token": "tok-a"})
    img = await a.create(name="tokened")            # member implies reader
    assert img["owner"] == A
    assert (await a.get(f"/v2/images/{img['id']}")).status == 200
    b = client.as_(**{"X-Auth-Token": "tok-b"})
    assert (await b.get(f"/v2/images/{img['id']}")).status == 404
    assert (await b.post("/v2/images", {"name": "x"})).status == 403
    admin = client.as_(**{"X-Auth-Token": "tok-admin"})
    assert (await admin.get(f"/v2/images/{img['id']}")).status == 200
    # identity headers are ignored in this mode
    r = await client.get("/v2/images", headers={"X-Identity-Status": "Confirmed",
                                               "X-Roles": "admin"})
    assert r.status == 401


def test_bad_auth_configuration(tmp_path):
    with pytest.raises(AuthConfigError):
        Authenticator.from_config("kerberos", None)
    with pytest.raises(AuthConfigError):
        Authenticator.from_config("tokens", None)
    with pytest.raises(AuthConfigError):
        load_tokens(write_tokens(tmp_path / "t.json", ["not", "a", "map"]))
    with pytest.raises(AuthConfigError):
        load_tokens(tmp_path / "missing.json")
    table = load_tokens(write_tokens(tmp_path / "ok.json",
                                     {"t": {"project_id": "p", "roles": ["Admin"]}}))
    assert table["t"].is_admin and table["t"].roles == {"admin", "member", "reader"}
