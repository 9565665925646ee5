# Secondary-index keys of the `imgidx` database: order-preserving, prefix-free encodings of
# the sort keys and filter partitions, and their maintenance on every record write.
# Invariants:
# - Every listed image (status not killed/deleted) has exactly the keys `index_keys(rec)`
#   (plus one member-partition key per member); catalog.store() calls reindex() in the same
#   write transaction as the record, so an index never disagrees with the records.
# - Keys (docs/formats.md, "Image records"):
#     sort index:  b"s" + sort code + enc(value) + ts8(created_at) + id16
#     partition:   b"p" + field code + enc(value) + ts8(created_at) + id16   (owner, visibility,
#                  tag, member project) -- ordered by created_at for the default sort
#   Byte order is sort order, and no key of an index is a prefix of another.
# - Values are empty except in the created_at sort index, whose value is the image record's
#   exact stored encoding (rewritten with every record write).
from __future__ import annotations

from typing import Any

from tessera.engine.records import ImageRecord, id_key
from tessera.engine.states import UNLISTED

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id",
             "created_at", "updated_at")
SORT_CODE = {k: bytes([ord("a") + i]) for i, k in enumerate(SORT_KEYS)}
PART_CODE = {"owner": b"o", "visibility": b"v", "tag": b"t", "member": b"m"}


# -- order-preserving, prefix-free encodings ---------------------------------------------

def enc_str(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    return b"\x01" + value.encode("utf-8", "surrogatepass").replace(b"\x00", b"\x00\xff") \
        + b"\x00\x00"


def enc_int(value: int | None) -> bytes:
    if value is None:
        return b"\x00"
    return b"\x01" + (value + (1 << 63)).to_bytes(8, "big")


def ts8(epoch: float) -> bytes:
    return int(round(epoch * 1_000_000)).to_bytes(8, "big")


def sort_value(rec: ImageRecord, key: str) -> bytes:
    if key == "created_at":
        return b""
    if key == "id":
        return id_key(rec.id)
    if key == "updated_at":
        return ts8(rec.updated_at)
    if key == "size":
        return enc_int(rec.size)
    return enc_str(getattr(rec, key))


_COMPONENTS = {
    "name": lambda r: enc_str(r.name),
    "status": lambda r: enc_str(r.status),
    "container_format": lambda r: enc_str(r.container_format),
    "disk_format": lambda r: enc_str(r.disk_format),
    "size": lambda r: enc_int(r.size),
    "id": lambda r: id_key(r.id),
    "created_at": lambda r: ts8(r.created_at),
    "updated_at": lambda r: ts8(r.updated_at),
}


def component(rec: ImageRecord, key: str) -> bytes:
    """One sort component as comparable bytes (created_at is its own component here)."""
    return _COMPONENTS[key](rec)


def successor(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string starting with `prefix`."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1])


_INVERT = bytes(range(255, -1, -1))


def invert(b: bytes) -> bytes:
    """Every byte complemented: reverses the order of prefix-free encodings."""
    return b.translate(_INVERT)


def sort_prefix(key: str) -> bytes:
    return b"s" + SORT_CODE[key]


def part_prefix(kind: str, value: str | None) -> bytes:
    return b"p" + PART_CODE[kind] + enc_str(value)


def index_keys(rec: ImageRecord) -> set[bytes]:
    """Every imgidx key of a listed record, member partitions excepted."""
    tail = ts8(rec.created_at) + id_key(rec.id)
    keys = {sort_prefix(k) + sort_value(rec, k) + tail for k in SORT_KEYS}
    keys.add(part_prefix("owner", rec.owner) + tail)
    keys.add(part_prefix("visibility", rec.visibility) + tail)
    for tag in rec.tags:
        keys.add(part_prefix("tag", tag) + tail)
    return keys


def member_index_key(rec: ImageRecord, member_id: str) -> bytes:
    return part_prefix("member", member_id) + ts8(rec.created_at) + id_key(rec.id)


def covering_key(rec: ImageRecord) -> bytes:
    """The created_at sort-index key; its value is the encoded record (a covering index),
    so the default listing reads records straight off its cursor."""
    return sort_prefix("created_at") + ts8(rec.created_at) + id_key(rec.id)


def reindex(txn: Any, db: Any, old: ImageRecord | None, new: ImageRecord | None,
            encoded: bytes | None = None) -> None:
    """Bring the indexes from `old` to `new` (either may be None); `encoded` is the stored
    encoding of `new`, copied into the covering created_at index."""
    old_keys = index_keys(old) if old is not None and old.status not in UNLISTED else set()
    new_keys = index_keys(new) if new is not None and new.status not in UNLISTED else set()
    for key in old_keys - new_keys:
        txn.delete(key, db=db)
    for key in new_keys - old_keys:
        txn.put(key, b"", db=db)
    if new_keys:
        assert new is not None and encoded is not None
        txn.put(covering_key(new), encoded, db=db)
