# The data path's LMDB records: chunk entries (`chunks`), segment entries (`segments`), the
# reaper queue (`unref`), the cache order (`lru`) and the cache byte counter (`meta`).
# Invariants (checked by fsck):
# - A chunk entry's refcount equals the number of manifest extents naming it; an entry with
#   refcount 0 has exactly one `unref` key (unref time + id), others have none.
# - A resident entry (segment is not None) points at a record inside its segment's committed
#   length; `live` of a segment is the sum of (record header + payload) of entries in it.
# - A resident `cache` entry has exactly one `lru` key (access time + id); `meta.cache_bytes`
#   is the sum of their lengths. `store` entries are never in `lru`.
# Encodings are in docs/formats.md; this module is the only one that builds these keys.
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from tessera.engine.index import Index, pack, unpack
from tessera.engine.segments import RECORD

STORE = 0
CACHE = 1
RESIDENCY_NAMES = {STORE: "store", CACHE: "cache"}
_TIME_KEY = struct.Struct(">Q32s")
_SEG_KEY = struct.Struct(">I")
CACHE_BYTES = b"cache_bytes"


def ms(t: float) -> int:
    return int(t * 1000)


@dataclass(slots=True)
class ChunkEntry:
    segment: int | None     # None: known (referenced) but not held here (an evicted cache chunk)
    offset: int             # payload offset in the segment
    length: int
    header: int             # record header offset
    refcount: int
    residency: int
    verified_at: int        # ms since epoch
    unref_at: int           # ms since epoch when refcount fell to 0 (key in `unref`), else 0
    accessed_at: int        # ms; key in `lru` for resident cache chunks, else 0

    def pack(self) -> bytes:
        return pack([self.segment, self.offset, self.length, self.header, self.refcount,
                     self.residency, self.verified_at, self.unref_at, self.accessed_at])

    @classmethod
    def unpack(cls, raw: bytes) -> "ChunkEntry":
        return cls(*unpack(raw))

    @property
    def resident(self) -> bool:
        return self.segment is not None

    @property
    def record_bytes(self) -> int:
        return self.length + RECORD.size


@dataclass(slots=True)
class SegmentEntry:
    committed: int
    sealed: bool
    live: int

    def pack(self) -> bytes:
        return pack([self.committed, self.sealed, self.live])

    @classmethod
    def unpack(cls, raw: bytes) -> "SegmentEntry":
        return cls(*unpack(raw))


def seg_key(number: int) -> bytes:
    return _SEG_KEY.pack(number)


def time_key(t_ms: int, cid: bytes) -> bytes:
    return _TIME_KEY.pack(t_ms, cid)


def split_time_key(key: bytes) -> tuple[int, bytes]:
    return _TIME_KEY.unpack(key)


class ChunkDB:
    """Typed access to the data path's databases inside a caller's transaction."""

    def __init__(self, index: Index) -> None:
        self.chunks = index.db("chunks")
        self.segments = index.db("segments")
        self.unref = index.db("unref")
        self.lru = index.db("lru")
        self.meta = index.db("meta")
        self.manifests = index.db("manifests")
        self.images = index.db("images")

    # chunks
    def get(self, txn: Any, cid: bytes) -> ChunkEntry | None:
        raw = txn.get(cid, db=self.chunks)
        return None if raw is None else ChunkEntry.unpack(raw)

    def put(self, txn: Any, cid: bytes, entry: ChunkEntry) -> None:
        txn.put(cid, entry.pack(), db=self.chunks)

    def drop(self, txn: Any, cid: bytes, entry: ChunkEntry) -> None:
        """Remove an entry and everything that points at it."""
        if entry.unref_at:
            txn.delete(time_key(entry.unref_at, cid), db=self.unref)
        self.uncache(txn, cid, entry)
        if entry.resident:
            self.add_live(txn, entry.segment, -entry.record_bytes)
        txn.delete(cid, db=self.chunks)

    # reaper queue
    def mark_unref(self, txn: Any, cid: bytes, entry: ChunkEntry, now_ms: int) -> None:
        if not entry.unref_at:
            entry.unref_at = max(now_ms, 1)
            txn.put(time_key(entry.unref_at, cid), b"", db=self.unref)

    def clear_unref(self, txn: Any, cid: bytes, entry: ChunkEntry) -> None:
        if entry.unref_at:
            txn.delete(time_key(entry.unref_at, cid), db=self.unref)
            entry.unref_at = 0

    # cache tier
    def cache(self, txn: Any, cid: bytes, entry: ChunkEntry, now_ms: int) -> None:
        if entry.residency == CACHE or not entry.resident:
            entry.residency = CACHE
            return
        entry.residency = CACHE
        entry.accessed_at = max(now_ms, 1)
        txn.put(time_key(entry.accessed_at, cid), b"", db=self.lru)
        self.add_cache_bytes(txn, entry.length)

    def uncache(self, txn: Any, cid: bytes, entry: ChunkEntry) -> None:
        """Leave the lru (promotion to store, eviction, drop)."""
        if entry.residency == CACHE and entry.resident and entry.accessed_at:
            txn.delete(time_key(entry.accessed_at, cid), db=self.lru)
            self.add_cache_bytes(txn, -entry.length)
        entry.accessed_at = 0

    def touch(self, txn: Any, cid: bytes, entry: ChunkEntry, now_ms: int) -> None:
        if entry.residency == CACHE and entry.resident and entry.accessed_at:
            txn.delete(time_key(entry.accessed_at, cid), db=self.lru)
            entry.accessed_at = max(now_ms, entry.accessed_at)
            txn.put(time_key(entry.accessed_at, cid), b"", db=self.lru)

    def cache_bytes(self, txn: Any) -> int:
        raw = txn.get(CACHE_BYTES, db=self.meta)
        return 0 if raw is None else unpack(raw)

    def add_cache_bytes(self, txn: Any, delta: int) -> None:
        txn.put(CACHE_BYTES, pack(self.cache_bytes(txn) + delta), db=self.meta)

    # segments
    def segment(self, txn: Any, number: int) -> SegmentEntry | None:
        raw = txn.get(seg_key(number), db=self.segments)
        return None if raw is None else SegmentEntry.unpack(raw)

    def put_segment(self, txn: Any, number: int, entry: SegmentEntry) -> None:
        txn.put(seg_key(number), entry.pack(), db=self.segments)

    def all_segments(self, txn: Any) -> dict[int, SegmentEntry]:
        out = {}
        with txn.cursor(db=self.segments) as cur:
            for key, raw in cur:
                out[_SEG_KEY.unpack(bytes(key))[0]] = SegmentEntry.unpack(raw)
        return out

    def commit_length(self, txn: Any, number: int, end: int, segment_size: int) -> None:
        seg = self.segment(txn, number) or SegmentEntry(0, False, 0)
        if end > seg.committed:
            seg.committed = end
        if seg.committed >= segment_size:
            seg.sealed = True
        self.put_segment(txn, number, seg)

    def add_live(self, txn: Any, number: int, delta: int) -> None:
        seg = self.segment(txn, number) or SegmentEntry(0, False, 0)
        seg.live += delta
        self.put_segment(txn, number, seg)
