# JSON-patch rules of glance-api.md 1.4, through Engine.update_image, with exact messages.
import pytest

from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.errors import Conflict, Forbidden, InvalidInput, TooLarge
from tessera.engine.patch import PatchOp


@pytest.fixture
async def engine(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False,
                                         image_property_quota=3, image_tag_quota=2))
    yield eng
    await eng.aclose()


@pytest.fixture
async def image(engine):
    return await engine.create_image({"name": "n", "os_distro": "debian"}, owner="p1")


async def patch(engine, image, *ops, admin=False):
    return await engine.update_image(image.id, list(ops), is_admin=admin)


async def test_replace_base_and_extra(engine, image):
    rec = await patch(engine, image, PatchOp("replace", "/name", "new"),
                      PatchOp("replace", "/os_distro", "ubuntu"),
                      PatchOp("replace", "/min_ram", 64), PatchOp("replace", "/protected", True),
                      PatchOp("replace", "/visibility", "community"),
                      PatchOp("replace", "/os_hidden", True),
                      PatchOp("replace", "/tags", ["x", "y", "x"]))
    assert (rec.name, rec.min_ram, rec.protected, rec.visibility, rec.os_hidden, rec.tags) == \
        ("new", 64, True, "community", True, ("x", "y"))
    assert rec.properties == {"os_distro": "ubuntu"}
    assert rec.updated_at >= image.updated_at
    assert engine.get_image(image.id) == rec


async def test_add_21_creates_or_overwrites(engine, image):
    rec = await patch(engine, image, PatchOp("add", "/os_distro", "fedora"),
                      PatchOp("add", "/hw_x", "1"), PatchOp("add", "/name", "via-add"))
    assert rec.properties == {"os_distro": "fedora", "hw_x": "1"} and rec.name == "via-add"


async def test_add_20_existing_conflicts(engine, image):
    with pytest.raises(Conflict) as info:
        await patch(engine, image, PatchOp("add", "/os_distro", "x", dialect="2.0"))
    assert info.value.message == "Property os_distro already present."
    with pytest.raises(Conflict) as info:
        await patch(engine, image, PatchOp("add", "/name", "x", dialect="2.0"))
    assert info.value.message == "Property name already present."
    rec = await patch(engine, image, PatchOp("add", "/fresh", "x", dialect="2.0"))
    assert rec.properties["fresh"] == "x"


async def test_replace_and_remove_missing_conflict(engine, image):
    for op in ("replace", "remove"):
        with pytest.raises(Conflict) as info:
            await patch(engine, image, PatchOp(op, "/foo", "x"))
        assert info.value.message == "Property foo does not exist."


async def test_remove_extra_and_base(engine, image):
    rec = await patch(engine, image, PatchOp("remove", "/os_distro"))
    assert rec.properties == {}
    with pytest.raises(Forbidden) as info:
        await patch(engine, image, PatchOp("remove", "/name"))
    assert info.value.message == "Property name may not be removed."


@pytest.mark.parametrize("attr", ["created_at", "updated_at", "status", "checksum", "size",
                                  "virtual_size", "direct_url", "self", "file", "schema", "id",
                                  "os_hash_algo", "os_hash_value", "stores"])
@pytest.mark.parametrize("op", ["add", "replace", "remove"])
async def test_read_only(engine, image, attr, op):
    with pytest.raises(Forbidden) as info:
        await patch(engine, image, PatchOp(op, f"/{attr}", "x"))
    assert info.value.message == f"Attribute '{attr}' is read-only."


@pytest.mark.parametrize("attr", ["location", "deleted", "deleted_at", "os_glance_import_task",
                                  "os_glance"])
async def test_reserved(engine, image, attr):
    with pytest.raises(Forbidden) as info:
        await patch(engine, image, PatchOp("add", f"/{attr}", "x"))
    assert info.value.message == f"Attribute '{attr}' is reserved."


async def test_locations_invisible(engine, image):
    with pytest.raises(Forbidden) as info:
        await patch(engine, image, PatchOp("replace", "/locations", []))
    assert info.value.message == \
        "It's not allowed to update/add/remove locations if locations are invisible."


async def test_owner_replace_admin_only(engine, image):
    with pytest.raises(Forbidden) as info:
        await patch(engine, image, PatchOp("replace", "/owner", "p2"))
    assert info.value.message == "Owner can't be updated by non admin."
    assert (await patch(engine, image, PatchOp("replace", "/owner", "p2"), admin=True)).owner \
        == "p2"


async def test_formats_only_while_queued_or_importing(engine, image):
    rec = await patch(engine, image, PatchOp("replace", "/disk_format", "raw"),
                      PatchOp("replace", "/container_format", "bare"))
    assert (rec.disk_format, rec.container_format) == ("raw", "bare")
    cat = engine.catalog
    await cat.run(lambda txn: cat.cas(txn, image.id, "queued", "active", now=1.0))
    for name, value in (("disk_format", "qcow2"), ("container_format", "ovf")):
        with pytest.raises(Forbidden) as info:
            await patch(engine, image, PatchOp("replace", f"/{name}", value))
        assert info.value.message == f"Attribute {name} can be only replaced for a queued image."
    assert (await patch(engine, image, PatchOp("replace", "/name", "ok"))).name == "ok"


@pytest.mark.parametrize("path,value", [
    ("/name", 5), ("/name", "x" * 256), ("/visibility", "secret"), ("/protected", "true"),
    ("/os_hidden", 1), ("/min_disk", -1), ("/min_ram", "5"), ("/min_disk", False),
    ("/disk_format", "exe"), ("/container_format", "zip"), ("/tags", "a"),
    ("/tags", ["y" * 256]), ("/os_distro", 5), ("/os_distro", None), ("/" + "k" * 256, "v"),
    ("/owner", 5),
])
async def test_value_validation(engine, image, path, value):
    with pytest.raises(InvalidInput) as info:
        await patch(engine, image, PatchOp("replace", path, value), admin=True)
    assert info.value.message.startswith("Provided object does not match schema 'image': ")


@pytest.mark.parametrize("pointer,message", [
    ("name", 'Pointer `name` does not start with "/".'),
    ("/a//b", 'Pointer `/a//b` contains adjacent "/".'),
    ("/name/", 'Pointer `/name/` end with "/".'),
    ("/na~2me", 'Pointer `/na~2me` contains "~" not part of a recognized escape sequence.'),
    ("/name/x", "Invalid JSON pointer for this resource: '/name/x'"),
])
async def test_pointer_rules(engine, image, pointer, message):
    with pytest.raises(InvalidInput) as info:
        await patch(engine, image, PatchOp("replace", pointer, "x"))
    assert info.value.message == message


async def test_pointer_escapes(engine, image):
    rec = await patch(engine, image, PatchOp("add", "/a~1b~0c", "v"))
    assert rec.properties["a/b~c"] == "v"


async def test_bad_op_and_missing_value(engine, image):
    with pytest.raises(InvalidInput):
        await patch(engine, image, PatchOp("move", "/name", "x"))
    with pytest.raises(InvalidInput) as info:
        await patch(engine, image, PatchOp("replace", "/name"))
    assert info.value.message == "Unable to find `value` in JSON Schema change"


async def test_patch_is_atomic(engine, image):
    with pytest.raises(Conflict):
        await patch(engine, image, PatchOp("replace", "/name", "changed"),
                    PatchOp("remove", "/missing"))
    assert engine.get_image(image.id) == image
    # validation of all ops happens before any is applied
    with pytest.raises(Forbidden):
        await patch(engine, image, PatchOp("remove", "/missing"),
                    PatchOp("replace", "/status", "active"))


async def test_property_quota(engine, image):
    await patch(engine, image, PatchOp("add", "/b", "1"), PatchOp("add", "/c", "1"))
    with pytest.raises(TooLarge) as info:
        await patch(engine, image, PatchOp("add", "/d", "1"))
    assert info.value.message == ("The limit has been exceeded on the number of allowed image "
                                  "properties. Attempted: 4, Maximum: 3")
    # replacing existing ones does not add properties, so it is allowed at the limit
    assert (await patch(engine, image, PatchOp("replace", "/b", "2"))).properties["b"] == "2"


async def test_tag_quota(engine, image):
    with pytest.raises(TooLarge) as info:
        await patch(engine, image, PatchOp("replace", "/tags", ["a", "b", "c"]))
    assert info.value.message == ("The limit has been exceeded on the number of allowed image "
                                  "tags. Attempted: 3, Maximum: 2")
    assert (await patch(engine, image, PatchOp("replace", "/tags", ["a", "b"]))).tags == \
        ("a", "b")


async def test_deleted_image_not_found(engine, image):
    from tessera.engine.errors import NotFound
    await engine.delete_image(image.id)
    with pytest.raises(NotFound):
        await patch(engine, image, PatchOp("replace", "/name", "x"))
