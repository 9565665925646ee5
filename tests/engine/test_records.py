# Image/member records: msgpack round trips, the on-disk array layout, old-record decoding,
# id keys, and the decode cache.
import msgpack
import pytest

from tessera.engine.records import (IMAGE_FIELDS, DecodeCache, ImageRecord, MemberRecord,
                                    decode_image, decode_member, encode_image, encode_member,
                                    id_from_key, id_key, is_uuid)

ID = "0b6a4f7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"


def make(**changes):
    base = dict(id=ID, name="n", status="queued", visibility="shared", protected=False,
                os_hidden=False, checksum=None, os_hash_algo=None, os_hash_value=None,
                size=None, virtual_size=None, disk_format=None, container_format=None,
                min_disk=0, min_ram=0, owner="p", created_at=1.5, updated_at=2.5)
    base.update(changes)
    return ImageRecord(**base)


def test_round_trip_keeps_every_field():
    rec = make(tags=("a", "b"), properties={"os_distro": "debian", "k": ""}, size=10,
               checksum="c" * 32, blake3="b" * 64, stores=("default",), name="\x00ü")
    back = decode_image(encode_image(rec))
    assert back == rec
    assert isinstance(back.tags, tuple) and isinstance(back.stores, tuple)
    assert dict(back.properties) == {"os_distro": "debian", "k": ""}


def test_layout_is_a_versioned_array_in_field_order():
    row = msgpack.unpackb(encode_image(make()), raw=False)
    assert row[0] == 1
    assert len(row) == 1 + len(IMAGE_FIELDS)
    assert row[1 + IMAGE_FIELDS.index("owner")] == "p"


def test_older_shorter_record_gets_defaults():
    row = msgpack.unpackb(encode_image(make()), raw=False)[:-4]  # before tags..stores existed
    rec = decode_image(msgpack.packb(row))
    assert rec.tags == () and rec.properties == {} and rec.blake3 is None and rec.stores == ()


def test_records_are_frozen():
    with pytest.raises(Exception):
        make().name = "x"  # type: ignore[misc]


def test_member_round_trip():
    m = MemberRecord(ID, "proj", "accepted", 1.0, 2.0)
    assert decode_member(ID, "proj", encode_member(m)) == m


def test_id_keys_and_uuid_check():
    assert len(id_key(ID)) == 16 and id_from_key(id_key(ID)) == ID
    assert is_uuid(ID) and is_uuid(ID.upper())
    for bad in ("x", ID[:-1], "{" + ID + "}", ID.replace("-", ""), None, 5):
        assert not is_uuid(bad)


def test_decode_cache_hits_and_stays_bounded():
    cache = DecodeCache(size=2)
    raws = [encode_image(make(name=str(i))) for i in range(3)]
    first = cache.decode(raws[0])
    assert cache.decode(bytes(raws[0])) is first
    for raw in raws:
        cache.decode(raw)
    assert len(cache._map) == 2
    assert cache.decode(raws[2]).name == "2"
