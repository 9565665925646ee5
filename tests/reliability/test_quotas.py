# Quotas and limits through the Images API (in-process app, real engine): image_size_cap
# before any body byte is read, the per-image limits (properties, tags, members; locations
# cannot be written at all), and the per-project totals (image_count_total, image_size_total,
# image_stage_total, image_count_uploading) with Glance's 413 and its quota message, counted
# in the transaction of the change they limit, reported by /v2/info/usage, exact after any
# sequence of changes and recounted for a store written before the counters existed.
import random

import trio

from tessera.engine import quotas
from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.index import Index
from tessera.http.config import ServerConfig

KiB = 1024
MiB = 1024 * KiB
A, B = "a" * 32, "b" * 32
QUOTA_MSG = ("The request returned a 413 Request Entity Too Large. This generally means that "
             "rate limiting or a quota threshold was breached.")


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def recount(engine) -> dict:
    """Every project's totals recomputed from the records (the oracle for the counters)."""
    out: dict = {}
    with engine.index.read() as txn:
        for _, raw in txn.cursor(db=engine.catalog.images):
            from tessera.engine.records import decode_image
            rec = decode_image(raw)
            c = quotas.contribution(rec)
            cur = out.setdefault(rec.owner or "", [0, 0, 0, 0])
            for i in range(4):
                cur[i] += c[i]
    return {k: v for k, v in out.items() if any(v)}


def counters(engine, owners=(A, B, "")) -> dict:
    out = {}
    with engine.index.read() as txn:
        for owner in owners:
            u = quotas.usage(txn, engine.catalog.usage, owner or None)
            values = [u.image_count_total, u.image_size_total, u.image_stage_total,
                      u.image_count_uploading]
            if any(values):
                out[owner] = values
    return out


async def test_size_cap_refuses_a_declared_length_before_reading(make_api):
    api = await make_api(image_size_cap=100 * KiB)
    img = await api.create()
    r = await api.request("PUT", f"/v2/images/{img['id']}/file", blob(200 * KiB, 1),
                          headers={"Content-Type": "application/octet-stream"})
    assert r.status == 413
    assert "too large" in r.json()["message"]
    assert (await api.get(f"/v2/images/{img['id']}")).json()["status"] == "queued"
    # a chunked body with no declared length is cut at the cap, the image stays queued
    r = await api.request("PUT", f"/v2/images/{img['id']}/file", blob(200 * KiB, 1),
                          headers={"Content-Type": "application/octet-stream"}, chunked=True)
    assert r.status == 413
    assert (await api.get(f"/v2/images/{img['id']}")).json()["status"] == "queued"
    assert api.engine.chunks.stats()["chunks"] == 0
    assert (await api.upload(img["id"], blob(100 * KiB, 2))).status == 204


async def test_per_image_limits_are_413(make_api):
    api = await make_api(image_property_quota=2, image_tag_quota=2, image_member_quota=1)
    r = await api.post("/v2/images", {"a": "1", "b": "2", "c": "3"})
    assert r.status == 413
    assert "Attempted: 3, Maximum: 2" in r.json()["message"]
    img = await api.create(a="1", b="2", visibility="shared")
    url = f"/v2/images/{img['id']}"
    r = await api.patch(url, [{"op": "add", "path": "/c", "value": "3"}])
    assert r.status == 413
    for tag in ("x", "y"):
        assert (await api.put(f"{url}/tags/{tag}")).status == 204
    r = await api.put(f"{url}/tags/z")
    assert r.status == 413
    assert (await api.post(f"{url}/members", {"member": A})).status == 200
    r = await api.post(f"{url}/members", {"member": B})
    assert r.status == 413
    # locations are never writable (show_multiple_locations off): no quota to bypass
    r = await api.patch(url, [{"op": "add", "path": "/locations/-",
                               "value": {"url": "file:///etc/passwd", "metadata": {}}}])
    assert r.status == 403


async def test_image_count_total(make_api, identity):
    api = await make_api(server=ServerConfig(auth="trusted-headers"), image_count_total=2)
    a, b = api.as_(**identity(A)), api.as_(**identity(B))
    first = await a.create()
    await a.create()
    r = await a.post("/v2/images", {"name": "third"})
    assert r.status == 413
    msg = r.json()["message"]
    assert msg.startswith(QUOTA_MSG)
    assert (f"Project {A} is over a limit for [Resource image_count_total is over limit of 2 "
            f"due to current usage 2 and delta 1]") in msg
    await b.create()                        # another project has its own count
    assert (await a.delete(f"/v2/images/{first['id']}")).status == 204
    await a.create()                        # a deleted image no longer counts
    r = await a.get("/v2/info/usage")
    assert r.json()["usage"]["image_count_total"] == {"limit": 2, "usage": 2}
    assert r.json()["usage"]["image_size_total"] == {"limit": -1, "usage": 0}


async def test_image_size_total_counts_in_the_activating_transaction(make_api, identity):
    api = await make_api(server=ServerConfig(auth="trusted-headers"), image_size_total=1)
    a = api.as_(**identity(A))
    one = await a.create()
    assert (await a.upload(one["id"], blob(700 * KiB, 1))).status == 204
    two = await a.create()
    # a declared length over the quota: 413 before any byte is read
    r = await a.upload(two["id"], blob(700 * KiB, 2))
    assert r.status == 413 and QUOTA_MSG in r.json()["message"]
    assert "Resource image_size_total is over limit of 1" in r.json()["message"]
    # no declared length: the bytes are read, the activating transaction refuses them
    r = await a.request("PUT", f"/v2/images/{two['id']}/file", blob(700 * KiB, 2),
                        headers={"Content-Type": "application/octet-stream"}, chunked=True)
    assert r.status == 413 and QUOTA_MSG in r.json()["message"]
    assert (await a.get(f"/v2/images/{two['id']}")).json()["status"] == "queued"
    usage = (await a.get("/v2/info/usage")).json()["usage"]
    assert usage["image_size_total"] == {"limit": 1, "usage": 0}    # 700 KiB is 0 MiB
    assert counters(api.engine)[A][1] == 700 * KiB
    # B is not charged for A's bytes, and A can upload again after a delete
    b = api.as_(**identity(B))
    other = await b.create()
    assert (await b.upload(other["id"], blob(700 * KiB, 3))).status == 204
    assert (await a.delete(f"/v2/images/{one['id']}")).status == 204
    assert (await a.upload(two["id"], blob(700 * KiB, 2))).status == 204
    assert counters(api.engine) == recount(api.engine)


async def test_image_stage_total(make_api):
    api = await make_api(image_stage_total=1)
    one, two = await api.create(), await api.create()
    r = await api.put(f"/v2/images/{one['id']}/stage", blob(700 * KiB, 1),
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status == 204
    r = await api.put(f"/v2/images/{two['id']}/stage", blob(700 * KiB, 2),
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status == 413
    assert "Resource image_stage_total is over limit of 1" in r.json()["message"]
    assert (await api.get(f"/v2/images/{two['id']}")).json()["status"] == "queued"
    assert (await api.delete(f"/v2/images/{one['id']}")).status == 204
    r = await api.put(f"/v2/images/{two['id']}/stage", blob(700 * KiB, 2),
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status == 204


async def test_image_count_uploading(make_api):
    api = await make_api(image_count_uploading=1)
    engine = api.engine
    one, two = await api.create(), await api.create()
    release = trio.Event()
    started = trio.Event()

    async def slow_source():
        yield b"x" * 1000
        started.set()
        await release.wait()
        yield b"y" * 1000

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: engine.upload(one["id"], slow_source(), expected_size=None))
        await started.wait()
        r = await api.upload(two["id"], blob(1000, 1))
        assert r.status == 413
        assert "Resource image_count_uploading is over limit of 1 due to current usage 2 " \
               "and delta 0" in r.json()["message"]
        assert (await api.get(f"/v2/images/{two['id']}")).json()["status"] == "queued"
        release.set()
    assert engine.get_image(one["id"]).status == "active"
    assert (await api.upload(two["id"], blob(1000, 1))).status == 204


async def test_no_limits_means_glance_empty_usage(api):
    assert (await api.get("/v2/info/usage")).json() == {"usage": {}}


async def test_counters_stay_exact_through_random_changes(make_api, identity):
    api = await make_api(server=ServerConfig(auth="trusted-headers"))
    rng = random.Random(7)
    clients = {p: api.as_(**identity(p)) for p in (A, B)}
    admin = api.as_(**identity(A, roles="admin,member,reader"))
    ids: list[str] = []
    for step in range(60):
        who = rng.choice([A, B])
        c = clients[who]
        action = rng.random()
        if action < 0.35 or not ids:
            ids.append((await c.create(name=f"i{step}"))["id"])
        elif action < 0.6:
            await admin.upload(rng.choice(ids), blob(rng.randrange(1, 300 * KiB), step))
        elif action < 0.7:
            await admin.put(f"/v2/images/{rng.choice(ids)}/stage", blob(5000, step),
                            headers={"Content-Type": "application/octet-stream"})
        elif action < 0.85:
            await admin.delete(f"/v2/images/{rng.choice(ids)}")
        else:                               # an admin hands an image to the other project
            await admin.patch(f"/v2/images/{rng.choice(ids)}",
                              [{"op": "replace", "path": "/owner", "value": rng.choice([A, B])}])
        assert counters(api.engine) == recount(api.engine), step


async def test_a_store_without_counters_is_counted_on_open(tmp_path):
    cfg = EngineConfig(data_dir=tmp_path / "d", durable=False, image_count_total=5)
    engine = await Engine.open(cfg)
    for i in range(3):
        await engine.create_image({"name": f"n{i}"}, owner=A)
    before = counters(engine)
    await engine.aclose()
    index = Index.open(cfg.index_dir, map_size=cfg.map_size, durable=False)

    def forget(txn):
        txn.drop(index.db("usage"), delete=False)
        txn.delete(quotas.REBUILT_KEY, db=index.db("meta"))

    index.writer.run_blocking(forget)
    index.close()
    engine = await Engine.open(cfg)
    try:
        assert counters(engine) == before == {A: [3, 0, 0, 0]}
        assert engine.usage(A)["image_count_total"] == {"limit": 5, "usage": 3}
    finally:
        await engine.aclose()
