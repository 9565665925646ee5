# Image members: the `members` database (image id16 + member project -> member record) and
# the member partition of the listing index.
# Invariants:
# - Functions taking `txn` run inside the caller's transaction (writes: a writer job), so a
#   member record and its index key always change together.
# - A member of a listed image has the key imgindex.member_index_key(image, member) in imgidx;
#   catalog.store() drops those keys when the image becomes unlisted.
from __future__ import annotations

from typing import Any

from tessera.engine.errors import Conflict, Forbidden, InvalidInput, NotFound, TooLarge
from tessera.engine.imgindex import member_index_key
from tessera.engine.listing import MEMBER_STATUSES
from tessera.engine.records import (ImageRecord, MemberRecord, decode_member, encode_member,
                                    id_key)
from tessera.engine.states import UNLISTED


def _key(image_id: str, member_id: str) -> bytes:
    return id_key(image_id) + member_id.encode("utf-8")


def get(txn: Any, db: Any, image_id: str, member_id: str) -> MemberRecord | None:
    raw = txn.get(_key(image_id, member_id), db=db)
    return None if raw is None else decode_member(image_id, member_id, raw)


def status_of(txn: Any, db: Any, image_id: str, member_id: str) -> str | None:
    member = get(txn, db, image_id, member_id)
    return None if member is None else member.status


def list_for(txn: Any, db: Any, image_id: str) -> list[MemberRecord]:
    prefix = id_key(image_id)
    out = []
    cursor = txn.cursor(db=db)
    ok = cursor.set_range(prefix)
    while ok:
        key = cursor.key()
        if not key.startswith(prefix):
            break
        out.append(decode_member(image_id, key[16:].decode("utf-8"), cursor.value()))
        ok = cursor.next()
    return out


def not_found(image_id: str, member_id: str) -> NotFound:
    return NotFound(f"{member_id} not found in the member list of the image {image_id}.")


def add(txn: Any, db: Any, idx_db: Any, image: ImageRecord, member_id: str, *, now: float,
        quota: int) -> MemberRecord:
    if image.visibility != "shared":
        raise Forbidden("Only shared images have members.")
    if not isinstance(member_id, str) or not member_id or len(member_id) > 255:
        raise InvalidInput("Invalid member id")
    if get(txn, db, image.id, member_id) is not None:
        raise Conflict(f"Member {member_id} is duplicated for image {image.id}")
    count = len(list_for(txn, db, image.id))
    if 0 <= quota < count + 1:
        raise TooLarge("The limit has been exceeded on the number of allowed image members "
                       f"for this image. Attempted: {count + 1}, Maximum: {quota}")
    member = MemberRecord(image.id, member_id, "pending", now, now)
    txn.put(_key(image.id, member_id), encode_member(member), db=db)
    if image.status not in UNLISTED:
        txn.put(member_index_key(image, member_id), b"", db=idx_db)
    return member


def update(txn: Any, db: Any, image: ImageRecord, member_id: str, status: str, *,
           now: float) -> MemberRecord:
    if status not in MEMBER_STATUSES:
        raise InvalidInput(f"Invalid status: {status}")
    member = get(txn, db, image.id, member_id)
    if member is None:
        raise not_found(image.id, member_id)
    new = MemberRecord(image.id, member_id, status, member.created_at, now)
    txn.put(_key(image.id, member_id), encode_member(new), db=db)
    return new


def delete(txn: Any, db: Any, idx_db: Any, image: ImageRecord, member_id: str) -> None:
    if not txn.delete(_key(image.id, member_id), db=db):
        raise not_found(image.id, member_id)
    txn.delete(member_index_key(image, member_id), db=idx_db)


def index_all(txn: Any, db: Any, idx_db: Any, image: ImageRecord) -> None:
    """Put back the member-partition keys of an image listed again (a restored image)."""
    for member in list_for(txn, db, image.id):
        txn.put(member_index_key(image, member.member_id), b"", db=idx_db)


def unindex_all(txn: Any, db: Any, idx_db: Any, image: ImageRecord) -> None:
    """Drop the member-partition keys of an image that stops being listed."""
    for member in list_for(txn, db, image.id):
        txn.delete(member_index_key(image, member.member_id), db=idx_db)
