# The status state machine: the table (glance-api.md 2.2) and its two rules.
import pytest

from tessera.engine.errors import InvalidInput, InvalidTransition
from tessera.engine.records import ImageRecord
from tessera.engine.states import STATUSES, TRANSITIONS, check, transition

GLANCE = {
    "queued": {"saving", "uploading", "importing", "active", "deleted"},
    "saving": {"active", "killed", "deleted", "queued"},
    "uploading": {"importing", "queued", "deleted"},
    "importing": {"active", "deleted", "queued"},
    "active": {"pending_delete", "deleted", "deactivated"},
    "deactivated": {"active", "deleted"},
    "pending_delete": {"deleted", "active"},
    "killed": {"deleted"},
    "deleted": set(),
}


def rec(status, **kw):
    base = dict(id="0b6a4f7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b", name=None, status=status,
                visibility="shared", protected=False, os_hidden=False, checksum=None,
                os_hash_algo=None, os_hash_value=None, size=None, virtual_size=None,
                disk_format="raw", container_format="bare", min_disk=0, min_ram=0,
                owner=None, created_at=1.0, updated_at=1.0)
    base.update(kw)
    return ImageRecord(**base)


def test_table_is_glance_table():
    assert {k: set(v) for k, v in TRANSITIONS.items()} == GLANCE
    assert set(STATUSES) == set(GLANCE)


@pytest.mark.parametrize("current", sorted(GLANCE))
@pytest.mark.parametrize("target", sorted(GLANCE))
def test_every_pair(current, target):
    if target in GLANCE[current]:
        check(current, target)
    else:
        with pytest.raises(InvalidTransition) as info:
            check(current, target)
        assert info.value.message == \
            f"Image status transition from {current} to {target} is not allowed"


@pytest.mark.parametrize("source", ["queued", "uploading"])
@pytest.mark.parametrize("target", ["saving", "active", "importing"])
def test_formats_required_leaving_queued_or_uploading(source, target):
    if target not in GLANCE[source]:
        return
    with pytest.raises(InvalidInput) as info:
        transition(rec(source, disk_format=None, container_format=None), target, now=2.0)
    assert info.value.message == \
        "Properties disk_format, container_format must be set prior to saving data."
    with pytest.raises(InvalidInput) as info:
        transition(rec(source, container_format=None), target, now=2.0)
    assert info.value.message == "Property container_format must be set prior to saving data."
    assert transition(rec(source), target, now=2.0).status == target


def test_stage_does_not_need_formats():
    out = transition(rec("queued", disk_format=None, container_format=None), "uploading",
                     now=2.0)
    assert out.status == "uploading"


def test_back_to_queued_clears_sizes_and_bumps_updated_at():
    out = transition(rec("saving", size=5, virtual_size=7), "queued", now=9.0)
    assert (out.status, out.size, out.virtual_size, out.updated_at) == ("queued", None, None, 9.0)
    kept = transition(rec("queued"), "saving", now=9.0, size=3)
    assert kept.size == 3
