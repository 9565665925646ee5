# The image catalog: reading and writing image records in the `images` database, with their
# secondary indexes, and compare-and-swap status changes.
# Invariants:
# - store() is the only function that writes an image record; it updates the listing and
#   member indexes in the same transaction, and moves updated_at strictly forward.
# - Every status change is cas(): it re-reads the record inside the write transaction and
#   fails unless the status is still `expected`, then applies the state machine
#   (states.transition). Two writers racing on one image cannot both win.
# - store() also moves the owner's per-project totals (engine/quotas.py) in the same
#   transaction, so quota checks made in a transaction see exact counts.
# - Deleted records stay as tombstones (ids are never reused).
from __future__ import annotations

from typing import Any

from tessera.engine import imgindex, members, quotas, states
from tessera.engine.errors import InvalidInput, InvalidTransition, NotFound
from tessera.engine.index import Index
from tessera.engine.records import (DecodeCache, ImageRecord, decode_image, encode_image,
                                    id_key, is_uuid)


def check_id(image_id: object) -> str:
    if not is_uuid(image_id):
        raise InvalidInput(f"Invalid image id: {image_id}")
    return image_id.lower()  # type: ignore[union-attr]


class Catalog:
    """Image records in one Index. Methods taking `txn` run in the caller's transaction."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.images = index.db("images")
        self.idx = index.db("imgidx")
        self.members = index.db("members")
        self.usage = index.db("usage")
        self.cache = DecodeCache()  # event-loop reads only
        # observer(txn, image_id), called in the writer txn of every image change (the
        # replica facade installs it to stamp changes; None on a single node)
        self.observer: Any = None

    def load(self, txn: Any, image_id: str) -> ImageRecord | None:
        """The record, tombstones included; None if the id was never used."""
        raw = txn.get(id_key(image_id), db=self.images)
        return None if raw is None else decode_image(raw)

    def load_live(self, txn: Any, image_id: str,
                  message: str = "No image found with ID {id}") -> ImageRecord:
        rec = self.load(txn, image_id)
        if rec is None or rec.status in states.GONE:
            raise NotFound(message.format(id=image_id))
        return rec

    def get(self, image_id: str) -> ImageRecord:
        image_id = check_id(image_id)
        with self.index.read() as txn:
            raw = txn.get(id_key(image_id), db=self.images)
        rec = None if raw is None else self.cache.decode(raw)
        if rec is None or rec.status in states.GONE:
            raise NotFound(f"No image found with ID {image_id}")
        return rec

    def store(self, txn: Any, old: ImageRecord | None, new: ImageRecord) -> ImageRecord:
        if old is not None and new.updated_at <= old.updated_at:
            # every stored change moves updated_at forward (renderers cache by it), even
            # when two changes share a clock tick or were stamped out of commit order
            new = new.evolve(updated_at=old.updated_at + 1e-6)
        encoded = encode_image(new)
        txn.put(id_key(new.id), encoded, db=self.images)
        imgindex.reindex(txn, self.idx, old, new, encoded)
        if self.observer is not None:
            self.observer(txn, new.id)
        quotas.account(txn, self.usage, old, new)
        if (old is not None and old.status not in states.UNLISTED
                and new.status in states.UNLISTED):
            members.unindex_all(txn, self.members, self.idx, old)
        elif (old is not None and old.status in states.UNLISTED
                and new.status not in states.UNLISTED):       # a restored pending_delete
            members.index_all(txn, self.members, self.idx, new)
        return new

    def cas(self, txn: Any, image_id: str, expected: str | tuple[str, ...], target: str, *,
            now: float, **changes: Any) -> ImageRecord:
        """Move the image from `expected` (one status or several) to `target`."""
        rec = self.load_live(txn, image_id)
        allowed = (expected,) if isinstance(expected, str) else expected
        if rec.status not in allowed:
            raise InvalidTransition(rec.status, target)
        return self.store(txn, rec, states.transition(rec, target, now=now, **changes))

    async def run(self, fn: Any) -> Any:
        return await self.index.writer.run(fn)
