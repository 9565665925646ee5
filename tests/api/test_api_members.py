# Image members: the pending/accepted/rejected workflow between two projects, shared
# visibility in lists, member list/show/update/delete, and Glance's 403/404 semantics
# (transcript section 4 and appendix A).
import pytest

A, B, C = "a" * 32, "b" * 32, "c" * 32


@pytest.fixture
def who(trusted, identity):
    return {p: trusted.as_(**identity(p)) for p in (A, B, C)}


async def test_noauth_member_lifecycle(api):
    img = await api.create(name="shared")
    url = f"/v2/images/{img['id']}/members"
    r = await api.post(url, {"member": "0123456789abcdef0123456789abcdef"})
    assert r.status == 200
    m = r.json()
    assert list(m) == ["member_id", "image_id", "status", "created_at", "updated_at", "schema"]
    assert m["status"] == "pending" and m["schema"] == "/v2/schemas/member"
    r = await api.post(url, {"member": "0123456789abcdef0123456789abcdef"})
    assert r.status == 409
    assert r.json()["message"].startswith(
        f"Member 0123456789abcdef0123456789abcdef is duplicated for image {img['id']}")
    r = await api.get(url)
    assert r.status == 200
    assert r.json() == {"members": [m], "schema": "/v2/schemas/members"}
    murl = f"{url}/0123456789abcdef0123456789abcdef"
    assert (await api.get(murl)).json() == m
    r = await api.put(murl, json_body={"status": "accepted"})
    assert r.status == 200 and r.json()["status"] == "accepted"
    r = await api.put(murl, json_body={"status": "maybe"})
    assert r.status == 400
    assert r.json()["message"].startswith(
        'Incorrect request: Status must be "pending", "accepted" or "rejected".')
    r = await api.delete(murl)
    assert r.status == 204 and r.body == b""
    r = await api.get(murl)
    assert r.status == 404
    assert r.json()["message"].startswith(
        f"0123456789abcdef0123456789abcdef not found in the member list of the image "
        f"{img['id']}.")


async def test_member_body_errors(api):
    img = await api.create(name="shared")
    url = f"/v2/images/{img['id']}/members"
    for body, msg in (({}, "Member to be added not specified"),
                      ({"member": ""}, "Member can't be empty"),
                      ([1], 'Expected a member in the form: {"member": "image_id"}')):
        r = await api.post(url, body)
        assert r.status == 400 and r.json()["message"].startswith(msg)
    r = await api.post(url, {"member": 7})             # Glance keeps a number as text
    assert r.status == 200 and r.json()["member_id"] == "7"
    r = await api.post(url, {"member": ["x"]})
    assert r.status == 400
    await api.post(url, {"member": B})
    r = await api.put(f"{url}/{B}", json_body={})
    assert r.status == 400 and r.json()["message"].startswith("Status not specified")


async def test_private_image_has_no_members(api):
    img = await api.create(name="private", visibility="private")
    url = f"/v2/images/{img['id']}/members"
    r = await api.post(url, {"member": B})
    assert r.status == 403
    assert r.json()["message"].startswith(f"Not allowed to create members for image {img['id']}.")
    r = await api.get(url)
    assert r.status == 403 and "Only shared images have members." in r.json()["message"]
    r = await api.get(f"{url}/{B}")
    assert r.status == 404


async def test_sharing_workflow_between_projects(who):
    a, b, c = who[A], who[B], who[C]
    img = await a.create(name="trusted-a")
    assert img["owner"] == A
    iid = img["id"]
    assert (await a.upload(iid, b"z" * 1000)).status == 204
    # B cannot see it yet.
    r = await b.get(f"/v2/images/{iid}")
    assert r.status == 404 and r.json()["message"].startswith(f"No image found with ID {iid}")
    assert (await b.get(f"/v2/images/{iid}/members")).status == 404
    # A shares with B: pending. B can fetch it by id and download, not list it.
    r = await a.post(f"/v2/images/{iid}/members", {"member": B})
    assert r.status == 200 and r.json()["status"] == "pending"
    assert (await b.get(f"/v2/images/{iid}")).status == 200
    assert (await b.get(f"/v2/images/{iid}/file")).body == b"z" * 1000
    assert (await b.get("/v2/images")).json()["images"] == []
    pending = (await b.get("/v2/images?member_status=pending")).json()["images"]
    assert [i["id"] for i in pending] == [iid]
    # The owner cannot accept on B's behalf; B can; C never sees anything.
    r = await a.put(f"/v2/images/{iid}/members/{B}", json_body={"status": "accepted"})
    assert r.status == 403
    assert r.json()["message"].startswith("You are not authorized to complete modify_member "
                                          "action.")
    r = await b.put(f"/v2/images/{iid}/members/{B}", json_body={"status": "accepted"})
    assert r.status == 200 and r.json()["status"] == "accepted"
    assert [i["id"] for i in (await b.get("/v2/images")).json()["images"]] == [iid]
    assert (await c.get(f"/v2/images/{iid}")).status == 404
    assert (await c.get("/v2/images")).json()["images"] == []
    # B sees only its own membership row; it may not add or remove members.
    await a.post(f"/v2/images/{iid}/members", {"member": C})
    rows = (await b.get(f"/v2/images/{iid}/members")).json()["members"]
    assert [m["member_id"] for m in rows] == [B]
    assert len((await a.get(f"/v2/images/{iid}/members")).json()["members"]) == 2
    assert (await b.get(f"/v2/images/{iid}/members/{C}")).status == 404
    r = await b.post(f"/v2/images/{iid}/members", {"member": "d" * 32})
    assert r.status == 403
    r = await b.delete(f"/v2/images/{iid}/members/{B}")
    assert r.status == 403
    # B rejects: gone from its default list, still reachable by id.
    await b.put(f"/v2/images/{iid}/members/{B}", json_body={"status": "rejected"})
    assert (await b.get("/v2/images")).json()["images"] == []
    assert (await b.get(f"/v2/images/{iid}")).status == 200
    # A removes B: B loses access.
    assert (await a.delete(f"/v2/images/{iid}/members/{B}")).status == 204
    assert (await b.get(f"/v2/images/{iid}")).status == 404


async def test_member_cannot_modify_or_deactivate(who):
    a, b = who[A], who[B]
    img = await a.create(name="x")
    await a.upload(img["id"], b"q" * 10)
    await a.post(f"/v2/images/{img['id']}/members", {"member": B})
    r = await b.patch(f"/v2/images/{img['id']}",
                      [{"op": "replace", "path": "/name", "value": "mine"}])
    assert r.status == 403
    assert r.json()["message"].startswith("You are not authorized to complete modify_image")
    r = await b.post(f"/v2/images/{img['id']}/actions/deactivate")
    assert r.status == 403
    assert r.json()["message"].startswith("You are not authorized to complete deactivate")
    assert (await b.delete(f"/v2/images/{img['id']}")).status == 403
    assert (await b.put(f"/v2/images/{img['id']}/tags/t")).status == 403
