# Image members: Glance's sharing rules (glance-api.md 1.7) and the member index used by
# listing.
import pytest

from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.errors import Conflict, Forbidden, InvalidInput, NotFound, TooLarge
from tessera.engine.listing import ListQuery
from tessera.engine.patch import PatchOp


@pytest.fixture
async def engine(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False,
                                         image_member_quota=2))
    yield eng
    await eng.aclose()


def listed(engine, project, **filters):
    return [r.id for r in engine.list_images(ListQuery(project, False, filters)).images]


async def test_member_lifecycle(engine):
    img = await engine.create_image({}, owner="owner")
    m = await engine.add_member(img.id, "p2")
    assert (m.image_id, m.member_id, m.status) == (img.id, "p2", "pending")
    assert engine.get_member(img.id, "p2") == m
    assert [x.member_id for x in engine.list_members(img.id)] == ["p2"]
    up = await engine.update_member(img.id, "p2", "accepted")
    assert up.status == "accepted" and up.created_at == m.created_at
    assert up.updated_at >= m.updated_at
    await engine.delete_member(img.id, "p2")
    assert engine.list_members(img.id) == []
    with pytest.raises(NotFound) as info:
        engine.get_member(img.id, "p2")
    assert info.value.message == f"p2 not found in the member list of the image {img.id}."


async def test_member_errors(engine):
    img = await engine.create_image({}, owner="owner")
    private = await engine.create_image({"visibility": "private"}, owner="owner")
    with pytest.raises(Forbidden) as info:
        await engine.add_member(private.id, "p2")
    assert info.value.message == "Only shared images have members."
    with pytest.raises(Forbidden):
        engine.list_members(private.id)
    await engine.add_member(img.id, "p2")
    with pytest.raises(Conflict) as info:
        await engine.add_member(img.id, "p2")
    assert info.value.message == f"Member p2 is duplicated for image {img.id}"
    await engine.add_member(img.id, "p3")
    with pytest.raises(TooLarge) as info:
        await engine.add_member(img.id, "p4")
    assert info.value.message == ("The limit has been exceeded on the number of allowed image "
                                  "members for this image. Attempted: 3, Maximum: 2")
    with pytest.raises(InvalidInput):
        await engine.update_member(img.id, "p2", "maybe")
    for call in (engine.update_member(img.id, "p9", "accepted"),
                 engine.delete_member(img.id, "p9")):
        with pytest.raises(NotFound):
            await call
    with pytest.raises(NotFound) as info:
        await engine.add_member("0b6a4f7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b", "p2")
    assert info.value.message == "Image 0b6a4f7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b not found."


async def test_member_status_drives_listing(engine):
    img = await engine.create_image({}, owner="owner")
    await engine.add_member(img.id, "p2")
    assert listed(engine, "p2") == []
    assert listed(engine, "p2", member_status="pending") == [img.id]
    assert listed(engine, "p2", member_status="all") == [img.id]
    await engine.update_member(img.id, "p2", "accepted")
    assert listed(engine, "p2") == [img.id]
    assert listed(engine, "p2", visibility="shared") == [img.id]
    assert listed(engine, "p3") == []
    await engine.update_member(img.id, "p2", "rejected")
    assert listed(engine, "p2") == [] and listed(engine, "p2", member_status="rejected") == \
        [img.id]
    await engine.update_member(img.id, "p2", "accepted")
    # membership grants nothing once the image is no longer shared
    await engine.update_image(img.id, [PatchOp("replace", "/visibility", "private")],
                              is_admin=False)
    assert listed(engine, "p2") == []
    await engine.update_image(img.id, [PatchOp("replace", "/visibility", "shared")],
                              is_admin=False)
    assert listed(engine, "p2") == [img.id]
    await engine.delete_member(img.id, "p2")
    assert listed(engine, "p2", member_status="all") == []


async def test_deleting_an_image_drops_member_index(engine):
    img = await engine.create_image({}, owner="owner")
    await engine.add_member(img.id, "p2")
    await engine.update_member(img.id, "p2", "accepted")
    await engine.delete_image(img.id)
    assert listed(engine, "p2", member_status="all") == []
    with engine.index.read() as txn:
        assert [k for k, _ in txn.cursor(db=engine.catalog.idx)] == []
