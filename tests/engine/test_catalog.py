# Catalog through the facade: create rules, get, CAS status changes, delete tombstones,
# deactivate/reactivate, tags, and index consistency with the records.
import dataclasses

import pytest
import trio

from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.errors import (Conflict, Forbidden, InvalidInput, InvalidTransition,
                                   NotFound, TooLarge)
from tessera.engine.imgindex import index_keys, member_index_key

ID = "0b6a4f7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
async def engine(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False))
    yield eng
    await eng.aclose()


def all_index_keys(engine):
    """The imgidx keys; checks on the way that created_at entries carry the exact record."""
    from tessera.engine.imgindex import sort_prefix
    keys = set()
    with engine.index.read() as txn:
        for key, value in txn.cursor(db=engine.catalog.idx):
            if key.startswith(sort_prefix("created_at")):
                assert value == txn.get(key[-16:], db=engine.catalog.images)
            else:
                assert value == b""
            keys.add(key)
    return keys


def expected_index_keys(engine):
    want = set()
    with engine.index.read() as txn:
        for _, raw in txn.cursor(db=engine.catalog.images):
            from tessera.engine.records import decode_image
            rec = decode_image(raw)
            if rec.status not in ("deleted", "killed"):
                want |= index_keys(rec)
                for m in engine.list_members(rec.id) if rec.visibility == "shared" else []:
                    want.add(member_index_key(rec, m.member_id))
    return want


async def test_create_defaults(engine):
    rec = await engine.create_image({"name": "x"}, owner="p1")
    assert rec.status == "queued" and rec.visibility == "shared" and rec.owner == "p1"
    assert (rec.protected, rec.os_hidden, rec.min_disk, rec.min_ram) == (False, False, 0, 0)
    assert rec.size is None and rec.checksum is None and rec.tags == () and rec.stores == ()
    assert rec.created_at == rec.updated_at
    assert engine.get_image(rec.id) == rec
    assert engine.get_image(rec.id.upper()) == rec


async def test_create_full(engine):
    rec = await engine.create_image(
        {"id": ID.upper(), "name": None, "visibility": "public", "protected": True,
         "os_hidden": True, "min_disk": 3, "min_ram": 512, "disk_format": "qcow2",
         "container_format": "bare", "tags": ["b", "a", "b"], "owner": "other",
         "os_distro": "debian"}, owner="p1")
    assert rec.id == ID and rec.owner == "other" and rec.tags == ("a", "b")
    assert rec.properties == {"os_distro": "debian"}
    assert (rec.visibility, rec.protected, rec.os_hidden, rec.min_disk, rec.min_ram) == \
        ("public", True, True, 3, 512)


@pytest.mark.parametrize("key", ["direct_url", "self", "file", "schema", "stores"])
async def test_create_disallowed(engine, key):
    with pytest.raises(Forbidden) as info:
        await engine.create_image({key: "x"}, owner=None)
    assert info.value.message == f"Attribute '{key}' is read-only."


@pytest.mark.parametrize("key,value", [("status", "active"), ("size", 5), ("checksum", "x"),
                                       ("created_at", "x"), ("os_hash_value", "x"),
                                       ("virtual_size", 1), ("updated_at", "x")])
async def test_create_read_only(engine, key, value):
    with pytest.raises(Forbidden) as info:
        await engine.create_image({key: value}, owner=None)
    assert info.value.message == f"Attribute '{key}' is read-only."


@pytest.mark.parametrize("key", ["location", "locations", "deleted", "deleted_at",
                                 "os_glance_import_task", "os_glancefoo"])
async def test_create_reserved(engine, key):
    with pytest.raises(Forbidden) as info:
        await engine.create_image({key: "x"}, owner=None)
    assert info.value.message == f"Attribute '{key}' is reserved."


@pytest.mark.parametrize("fields", [
    {"name": 5}, {"name": "x" * 256}, {"visibility": "secret"}, {"disk_format": "exe"},
    {"container_format": "zip"}, {"protected": "yes"}, {"min_disk": -1}, {"min_ram": 1.5},
    {"min_disk": True}, {"tags": "a"}, {"tags": ["x" * 256]}, {"os_distro": 5},
    {"os_distro": None}, {"k" * 256: "v"}, {"id": "not-a-uuid"}, {"id": 7}, {"owner": 1},
])
async def test_create_invalid_values(engine, fields):
    with pytest.raises(InvalidInput) as info:
        await engine.create_image(fields, owner=None)
    assert info.value.message.startswith("Provided object does not match schema 'image': ")


async def test_create_quotas(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False,
                                         image_property_quota=2, image_tag_quota=1))
    try:
        with pytest.raises(TooLarge) as info:
            await eng.create_image({"a": "1", "b": "2", "c": "3"}, owner=None)
        assert info.value.message == ("The limit has been exceeded on the number of allowed "
                                      "image properties. Attempted: 3, Maximum: 2")
        with pytest.raises(TooLarge):
            await eng.create_image({"tags": ["a", "b"]}, owner=None)
        await eng.create_image({"a": "1", "b": "2", "tags": ["x", "x"]}, owner=None)
    finally:
        await eng.aclose()


async def test_duplicate_and_deleted_ids_are_never_reused(engine):
    await engine.create_image({"id": ID}, owner=None)
    with pytest.raises(Conflict):
        await engine.create_image({"id": ID}, owner=None)
    await engine.delete_image(ID)
    with pytest.raises(NotFound) as info:
        engine.get_image(ID)
    assert info.value.message == f"No image found with ID {ID}"
    with pytest.raises(Conflict):
        await engine.create_image({"id": ID}, owner=None)
    with pytest.raises(NotFound) as info:
        await engine.delete_image(ID)
    assert info.value.message == f"Failed to find image {ID} to delete"


async def test_get_unknown_and_invalid(engine):
    with pytest.raises(NotFound):
        engine.get_image(ID)
    with pytest.raises(InvalidInput):
        engine.get_image("nope")


async def test_protected_cannot_be_deleted(engine):
    rec = await engine.create_image({"protected": True}, owner=None)
    with pytest.raises(Forbidden) as info:
        await engine.delete_image(rec.id)
    assert info.value.message == f"Image {rec.id} is protected and cannot be deleted."
    assert engine.get_image(rec.id).status == "queued"


async def test_cas_two_racers_one_wins(engine):
    rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner=None)
    cat = engine.catalog
    results = []

    async def racer():
        try:
            await cat.run(lambda txn: cat.cas(txn, rec.id, "queued", "saving", now=1.0))
            results.append("won")
        except InvalidTransition as exc:
            results.append(exc.message)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(racer)
    assert results.count("won") == 1
    assert results.count("Image status transition from saving to saving is not allowed") == 4


async def test_deactivate_reactivate(engine):
    rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner=None)
    with pytest.raises(Forbidden) as info:
        await engine.deactivate(rec.id)
    assert info.value.message == "Not allowed to deactivate image in status 'queued'"
    with pytest.raises(Forbidden) as info:
        await engine.reactivate(rec.id)
    assert info.value.message == "Not allowed to reactivate image in status 'queued'"
    cat = engine.catalog
    await cat.run(lambda txn: cat.cas(txn, rec.id, "queued", "active", now=2.0))
    assert (await engine.reactivate(rec.id)).status == "active"  # idempotent
    assert (await engine.deactivate(rec.id)).status == "deactivated"
    assert (await engine.deactivate(rec.id)).status == "deactivated"
    assert engine.get_image(rec.id).status == "deactivated"  # still readable
    assert (await engine.reactivate(rec.id)).status == "active"


async def test_tags(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False, image_tag_quota=2))
    try:
        rec = await eng.create_image({}, owner=None)
        await eng.add_tag(rec.id, "b")
        await eng.add_tag(rec.id, "a")
        assert (await eng.add_tag(rec.id, "a")).tags == ("a", "b")  # a set
        with pytest.raises(TooLarge):
            await eng.add_tag(rec.id, "c")
        with pytest.raises(InvalidInput):
            await eng.add_tag(rec.id, "x" * 256)
        assert (await eng.remove_tag(rec.id, "a")).tags == ("b",)
        with pytest.raises(NotFound):
            await eng.remove_tag(rec.id, "a")
        with pytest.raises(NotFound) as info:
            await eng.add_tag(ID, "a")
        assert info.value.message == f"Image {ID} not found."
    finally:
        await eng.aclose()


async def test_indexes_follow_every_change(engine):
    a = await engine.create_image({"name": "a", "tags": ["t1"], "visibility": "shared"},
                                  owner="p1")
    b = await engine.create_image({"name": "b", "visibility": "public"}, owner="p2")
    await engine.add_member(a.id, "p3")
    await engine.add_tag(b.id, "t2")
    from tessera.engine.patch import PatchOp
    await engine.update_image(a.id, [PatchOp("replace", "/name", "z"),
                                     PatchOp("replace", "/owner", "p9")], is_admin=True)
    assert all_index_keys(engine) == expected_index_keys(engine)
    await engine.delete_image(a.id)
    assert all_index_keys(engine) == expected_index_keys(engine)
    assert len(all_index_keys(engine)) == len(index_keys(engine.get_image(b.id)))


async def test_reopen_keeps_records(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False))
    rec = await eng.create_image({"name": "keep"}, owner="p")
    await eng.aclose()
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False))
    try:
        assert eng.get_image(rec.id) == rec
        assert dataclasses.asdict(eng.get_image(rec.id))["name"] == "keep"
    finally:
        await eng.aclose()


async def test_every_change_moves_updated_at_forward(engine):
    from tessera.engine.patch import PatchOp
    rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner=None)
    stamps = [rec.updated_at]
    cat = engine.catalog
    # stamped out of order and within one tick: still strictly increasing once stored
    stamps.append((await cat.run(lambda txn: cat.store(
        txn, cat.load(txn, rec.id), cat.load(txn, rec.id).evolve(name="a",
                                                                 updated_at=0.0)))).updated_at)
    for i in range(5):
        stamps.append((await engine.update_image(rec.id, [PatchOp("replace", "/name", str(i))],
                                                 is_admin=False)).updated_at)
    stamps.append((await engine.add_tag(rec.id, "t")).updated_at)
    stamps.append((await cat.run(lambda txn: cat.cas(txn, rec.id, "queued", "active",
                                                     now=1.0))).updated_at)
    assert all(a < b for a, b in zip(stamps, stamps[1:]))
    assert engine.get_image(rec.id).updated_at == stamps[-1]


async def test_create_checks_in_glance_order(engine):
    with pytest.raises(Forbidden):  # read-only-at-create first, before the schema
        await engine.create_image({"id": "bad", "self": "x"}, owner=None)
    with pytest.raises(InvalidInput):  # the schema (id pattern) before read-only attributes
        await engine.create_image({"id": "bad", "status": "active"}, owner=None)
