# The reaper: gives back the space of chunks nothing references.
# Invariants:
# - A chunk is dropped only if its refcount is 0, it has been unreferenced for longer than
#   the grace period, and no in-flight upload pins it (checked and claimed atomically with
#   the chunk store's pins: an upload that pins it later writes its own copy).
# - Compaction copies the live chunks of a segment whose live share is under
#   cfg.compact_below (and that holds at least MIN_DEAD_BYTES of dead space) into a fresh lease, fsyncs them, moves the index entries in one writer
#   job (only entries still pointing at the old place), and unlinks the old file only after
#   that commit. A reader holding the old mapping keeps a valid view; a reader that looks the
#   chunk up afterwards finds the new place. A crash at any step leaves either the old or the
#   new copy indexed, and the other one is cut off or removed when the store is opened.
# - The move commits only if the segment's (committed, live) in the writer transaction is
#   what the copy saw: an ingest whose commit was still in flight when the copy read the
#   index (its lease and pins are let go inside its writer job, before the commit) may have
#   added entries to the segment; the compaction is then rolled back and retried later, so
#   no entry is ever left pointing into a removed segment.
# - Segments being written (leased) or referenced by in-flight uploads are never compacted.
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from tessera.engine.chunkdb import ms, seg_key, split_time_key
from tessera.engine.chunkid import digest
from tessera.engine.errors import CorruptData
from tessera.engine.segments import Placed

if TYPE_CHECKING:
    from tessera.engine.chunkstore import ChunkStore

DROP_BATCH = 2000
COPY_GROUP_BYTES = 4 * 1024 * 1024
COPY_GROUP_RECORDS = 512
# A segment is compacted only if that gives back at least this much (or a quarter of a
# segment): small segments of small images are mostly 4 KiB padding and would otherwise be
# rewritten on every run.
MIN_DEAD_BYTES = 4 * 1024 * 1024


@dataclass
class ReapResult:
    dropped_chunks: int = 0
    dropped_bytes: int = 0
    compacted_segments: int = 0
    moved_chunks: int = 0
    moved_bytes: int = 0
    reclaimed_bytes: int = 0
    skipped: list[str] = field(default_factory=list)


class Reaper:
    def __init__(self, store: "ChunkStore") -> None:
        self.store = store
        self.runs = 0
        self.totals = ReapResult()

    def statistics(self) -> dict[str, Any]:
        t = self.totals
        return {"runs": self.runs, "dropped_chunks": t.dropped_chunks,
                "dropped_bytes": t.dropped_bytes, "compacted_segments": t.compacted_segments,
                "moved_bytes": t.moved_bytes, "reclaimed_bytes": t.reclaimed_bytes}

    async def run_once(self, *, now: float | None = None, grace: float | None = None,
                       compact: bool = True) -> ReapResult:
        store = self.store
        now = time.time() if now is None else now
        grace = store.cfg.reaper_grace if grace is None else grace
        cutoff = ms(now - grace)
        result = ReapResult()
        while True:
            claimed: set[bytes] = set()
            try:
                n, nbytes, more = await store.index.writer.run(
                    lambda txn: self._drop(txn, cutoff, claimed))
            finally:
                store.end_drops(claimed)
            result.dropped_chunks += n
            result.dropped_bytes += nbytes
            if not more:
                break
        if compact:
            for number in self._candidates():
                await self._compact(number, result)
        self.runs += 1
        for name in ("dropped_chunks", "dropped_bytes", "compacted_segments", "moved_chunks",
                     "moved_bytes", "reclaimed_bytes"):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(result, name))
        return result

    def _drop(self, txn: Any, cutoff: int, claimed: set[bytes]) -> tuple[int, int, bool]:
        store, db = self.store, self.store.db
        keys = []
        with txn.cursor(db=db.unref) as cur:
            for key, _ in cur:
                t, cid = split_time_key(bytes(key))
                if t > cutoff or len(keys) >= DROP_BATCH:
                    break
                keys.append((bytes(key), cid))
        dropped = nbytes = 0
        for key, cid in keys:
            entry = db.get(txn, cid)
            if entry is None or entry.refcount > 0 or split_time_key(key)[0] != entry.unref_at:
                txn.delete(key, db=db.unref)        # stale queue entry
                continue
            if not store.claim_drop(cid):       # an ingest counts on it
                continue
            claimed.add(cid)
            db.drop(txn, cid, entry)
            dropped += 1
            nbytes += entry.length
        return dropped, nbytes, len(keys) >= DROP_BATCH and dropped > 0

    def _candidates(self) -> list[int]:
        store = self.store
        with store.index.read() as txn:
            segs = store.db.all_segments(txn)
        out = []
        for number, seg in sorted(segs.items()):
            if store.segments.is_busy(number) or store.segment_pinned(number):
                continue
            share = seg.live / seg.committed if seg.committed else 0.0
            dead = seg.committed - seg.live
            worth = min(store.cfg.segment_size // 4, MIN_DEAD_BYTES)
            if seg.live == 0 or (share < store.cfg.compact_below and dead >= worth):
                out.append(number)
        return out

    async def _compact(self, number: int, result: ReapResult) -> None:
        store = self.store
        if store.segment_pinned(number) or not store.segments.claim(number):
            return
        lease = store.segments.lease()
        try:
            copied = await trio.to_thread.run_sync(self._copy_live, number, lease)
            if copied is None:
                result.skipped.append(f"segment {number}: unreadable record headers")
                store.segments.rollback(lease)
                store.segments.unclaim(number)
                return
            moved, seen = copied
            await trio.to_thread.run_sync(
                lambda: store.segments.sync(set(lease.spans), directory=lease.created))
            old_size = store.segments.sizes().get(number, 0)
            if not await store.index.writer.run(
                    lambda txn: self._move(txn, number, moved, lease, seen)):
                result.skipped.append(f"segment {number}: changed while being compacted")
                store.segments.rollback(lease)
                store.segments.unclaim(number)
                return
        except BaseException:
            store.segments.unclaim(number)
            raise
        finally:
            store.segments.release(lease)
        store.segments.remove(number)
        result.compacted_segments += 1
        result.moved_chunks += len(moved)
        result.moved_bytes += sum(p.length for _, _, p in moved)
        result.reclaimed_bytes += old_size

    def _copy_live(self, number: int, lease: Any) -> tuple[list, tuple] | None:
        """(moved chunks, the segment's (committed, live) as read), or None if unreadable."""
        store, db = self.store, self.store.db
        with store.index.read() as txn:
            seg = db.segment(txn, number)
        if seg is None:
            return [], None
        seen = (seg.committed, seg.live)
        live = []
        try:
            records = list(store.segments.records(number, seg.committed))
        except CorruptData:
            return None
        with store.index.read() as txn:
            for rec in records:
                entry = db.get(txn, rec.chunk_id)
                if entry is not None and entry.segment == number and entry.offset == rec.offset:
                    live.append((rec.chunk_id, rec.offset, rec.length))
        moved: list[tuple[bytes, int, Placed]] = []
        batch: list[tuple[bytes, memoryview]] = []
        olds: list[int] = []
        size = 0

        def flush() -> None:
            nonlocal size
            if batch:
                for (cid, _), old, placed in zip(batch, olds, lease.append(batch)):
                    moved.append((cid, old, placed))
                batch.clear()
                olds.clear()
                size = 0

        for cid, offset, length in live:
            view = store.segments.view(number, offset, length)
            if digest(view) != cid:
                return None          # never copy bad bytes forward; fsck reports them
            batch.append((cid, view))
            olds.append(offset)
            size += length
            if size >= COPY_GROUP_BYTES or len(batch) >= COPY_GROUP_RECORDS:
                flush()
        flush()
        return moved, seen

    def _move(self, txn: Any, number: int, moved: list, lease: Any, seen: tuple | None) -> bool:
        db, size = self.store.db, self.store.cfg.segment_size
        seg = db.segment(txn, number)
        if seen is not None and (seg is None or (seg.committed, seg.live) != seen):
            return False                  # entries came or went since the copy: retry later
        for cid, old, placed in moved:
            entry = db.get(txn, cid)
            if entry is not None and entry.segment == number and entry.offset == old:
                entry.segment, entry.offset, entry.header = \
                    placed.segment, placed.offset, placed.header
                db.put(txn, cid, entry)
                db.add_live(txn, placed.segment, entry.record_bytes)
        for seg, (start, end) in lease.spans.items():
            if end > start:
                db.commit_length(txn, seg, end, size)
        txn.delete(seg_key(number), db=db.segments)
        return True
