# The object tier's LMDB records, in an s3 store's own index: `objects` (pack object ->
# size, live bytes, chunk count, creation time) and `objchunks` (chunk id -> pack object,
# offset, length). Encodings: docs/formats.md ("Object tier").
# Invariants:
# - Every mapping names an object that has an `objects` row; `live` of a row is the sum of
#   the lengths of the mappings naming it and `chunks` their number (map/unmap/move keep
#   both in step, in the caller's writer transaction).
# - Every chunk a committed manifest of the store references has a mapping (the tier maps
#   them in the transaction that commits the manifest); a mapping goes only when its chunk
#   entry is dropped, or moves to another object with a row (repacking).
# - A row whose `writer` is set names another writer's pack (`packs/<writer>/`, installed
#   from a peer's image document, engine/objstore/shared.py): this index reads it but never
#   repacks nor deletes it; its row goes when nothing maps into it. A row without one is
#   this index's own pack.
# - This module is the only one that builds these keys and values.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.engine.index import Index, pack, unpack


@dataclass(frozen=True, slots=True)
class Loc:
    """Where a chunk's bytes are in the object store."""
    obj: bytes          # the pack's 32-byte BLAKE3 digest (its name)
    offset: int         # of the chunk's payload inside the object
    length: int


@dataclass(slots=True)
class ObjectRow:
    size: int
    live: int           # bytes of chunks mapped into it
    chunks: int         # number of chunks mapped into it
    created_ms: int
    writer: str | None = None   # another writer's pack (None: this index's own)

    @property
    def foreign(self) -> bool:
        return self.writer is not None

    def pack(self) -> bytes:
        fields = [self.size, self.live, self.chunks, self.created_ms]
        return pack(fields if self.writer is None else fields + [self.writer])

    @classmethod
    def unpack(cls, raw: bytes) -> "ObjectRow":
        return cls(*unpack(raw))


class ObjDB:
    """Typed access to `objects` and `objchunks` inside a caller's transaction."""

    def __init__(self, index: Index) -> None:
        self.objects = index.db("objects")
        self.objchunks = index.db("objchunks")
        self.chunks = index.db("chunks")

    # objects
    def row(self, txn: Any, obj: bytes) -> ObjectRow | None:
        raw = txn.get(obj, db=self.objects)
        return None if raw is None else ObjectRow.unpack(raw)

    def put_row(self, txn: Any, obj: bytes, row: ObjectRow) -> None:
        txn.put(obj, row.pack(), db=self.objects)

    def add_object(self, txn: Any, obj: bytes, size: int, created_ms: int) -> None:
        """A pack this index wrote that is durably in the object store (idempotent; a
        row naming another writer's copy of the same bytes becomes this index's own)."""
        row = self.row(txn, obj)
        if row is None:
            self.put_row(txn, obj, ObjectRow(size, 0, 0, created_ms))
        elif row.foreign:
            row.writer = None
            self.put_row(txn, obj, row)

    def add_foreign(self, txn: Any, obj: bytes, size: int, writer: str,
                    created_ms: int) -> None:
        """Another writer's pack that mappings may name (a row that exists stays)."""
        if txn.get(obj, db=self.objects) is None:
            self.put_row(txn, obj, ObjectRow(size, 0, 0, created_ms, writer))

    def remove_if_dead(self, txn: Any, obj: bytes) -> bool:
        """Drop the row of an object nothing maps into; True if it was dropped."""
        row = self.row(txn, obj)
        if row is None or row.chunks > 0:
            return False
        txn.delete(obj, db=self.objects)
        return True

    def rows(self, txn: Any) -> dict[bytes, ObjectRow]:
        with txn.cursor(db=self.objects) as cur:
            return {bytes(k): ObjectRow.unpack(v) for k, v in cur}

    # mappings
    def loc(self, txn: Any, cid: bytes) -> Loc | None:
        raw = txn.get(cid, db=self.objchunks)
        if raw is None:
            return None
        obj, offset, length = unpack(raw)
        return Loc(obj, offset, length)

    def map(self, txn: Any, cid: bytes, loc: Loc) -> None:
        """Map `cid` to `loc` (replacing any previous mapping)."""
        self.unmap(txn, cid)
        row = self.row(txn, loc.obj)
        if row is None:
            raise KeyError(f"object {loc.obj.hex()} has no row")
        row.live += loc.length
        row.chunks += 1
        self.put_row(txn, loc.obj, row)
        txn.put(cid, pack([loc.obj, loc.offset, loc.length]), db=self.objchunks)

    def unmap(self, txn: Any, cid: bytes) -> Loc | None:
        loc = self.loc(txn, cid)
        if loc is None:
            return None
        txn.delete(cid, db=self.objchunks)
        row = self.row(txn, loc.obj)
        if row is not None:
            row.live -= loc.length
            row.chunks -= 1
            self.put_row(txn, loc.obj, row)
        return loc

    def iter_locs(self, txn: Any, after: bytes | None = None, limit: int | None = None):
        """(chunk id, Loc) in id order, starting past `after`, at most `limit` of them."""
        with txn.cursor(db=self.objchunks) as cur:
            if after is None:
                ok = cur.first()
            else:
                ok = cur.set_range(after)
                if ok and bytes(cur.key()) == after:
                    ok = cur.next()
            n = 0
            while ok and (limit is None or n < limit):
                obj, offset, length = unpack(cur.value())
                yield bytes(cur.key()), Loc(obj, offset, length)
                n += 1
                ok = cur.next()

    def has_chunk_entry(self, txn: Any, cid: bytes) -> bool:
        return txn.get(cid, db=self.chunks) is not None
