# The chunk store: the engine's data path. It ingests byte streams into deduplicated chunks,
# commits their manifests, releases them, and reads images back.
# Invariants:
# - Chunk bytes are written only through segment leases; index writes happen only inside the
#   caller's writer transaction (Ingested.commit, release, mark_cache) or writer jobs of the
#   reaper and pruner.
# - Ingested.commit / abandon may be called more than once (a writer job can be retried):
#   their in-memory effects (pins, in-flight chunks, leases) happen once.
# - In-flight state: `_inflight` holds chunks written by uncommitted ingests (others may
#   reuse them instead of writing again); `_pins` counts in-flight ingests referencing a chunk
#   (the reaper and pruner skip pinned chunks); `_seg_pins` counts in-flight references into a
#   segment (compaction skips pinned segments).
# - A chunk the reaper decided to drop (`claim_drop`, under the lock, only if unpinned) stays
#   in `_reaping` until the reaper's transaction ended; an ingest pinning it meanwhile writes
#   its own copy instead of counting on the indexed one, which may be gone by its commit.
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio

from tessera.engine import manifest
from tessera.engine.chunkdb import CACHE, STORE, ChunkDB, ChunkEntry, ms
from tessera.engine.chunker import CHUNKER_ID
from tessera.engine.config import EngineConfig
from tessera.engine.errors import Conflict, StoreMismatch
from tessera.engine.index import Index, pack, unpack
from tessera.engine.ingest import Digests, IngestRun, run_pipeline
from tessera.engine.runcache import RunCache
from tessera.engine.segments import Placed, Segments

IDENTITY = {"chunker": CHUNKER_ID}
_MAX_SPARE_BUFFERS = 16


def open_index(cfg: EngineConfig) -> Index:
    """The index of `cfg`'s data directory, checked against this build's chunker."""
    return Index.open(cfg.index_dir, map_size=cfg.map_size, durable=cfg.durable,
                      identity=IDENTITY)


VERIFIED_NOTES = 65536      # pending verification times kept between pruner rounds


@dataclass
class _Inflight:
    placed: Placed | None       # None: claimed, being written by `owner`
    owner: IngestRun
    borrowed: bool = False


class ChunkStore:
    def __init__(self, cfg: EngineConfig, index: Index, segments: Segments) -> None:
        self.cfg = cfg
        self.index = index
        self.segments = segments
        self.db = ChunkDB(index)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._inflight: dict[bytes, _Inflight] = {}
        self._pins: Counter = Counter()
        self._seg_pins: Counter = Counter()
        self._reaping: set[bytes] = set()
        self._accessed: dict[bytes, int] = {}
        self._verified: dict[bytes, int] = {}
        self.runs = RunCache()              # download batches already resolved (engine/runcache.py)
        self._spare: list[bytearray] = []
        self.recovered: dict[str, int] = {}

    @classmethod
    def open(cls, cfg: EngineConfig, index: Index) -> "ChunkStore":
        """Open the data path of `cfg` on an open index; truncates writable segments to what
        the index knows was committed and removes segment files it does not know."""
        chunker = index.meta("chunker")
        if chunker is None:
            index.writer.run_blocking(
                lambda txn: txn.put(b"chunker", pack(CHUNKER_ID), db=index.db("meta")))
        elif chunker != CHUNKER_ID:
            raise StoreMismatch(f"data directory written with chunker {chunker!r}, "
                                f"this build uses {CHUNKER_ID!r}")
        segments = Segments(cfg.segments_dir, segment_size=cfg.segment_size,
                            durable=cfg.durable,
                            max_stored_bytes=cfg.max_stored_bytes)
        store = cls(cfg, index, segments)
        with index.read() as txn:
            known = {n: (s.committed, s.sealed) for n, s in store.db.all_segments(txn).items()}
        store.recovered = segments.recover(known)
        return store

    def close(self) -> None:
        self.segments.close()

    # -- ingest ---------------------------------------------------------------------------
    async def ingest(self, source: Any, *, expected_size: int | None,
                     size_cap: int, observer: Any = None) -> "Ingested":
        """Store the bytes of `source` (an async iterator of bytes-like pieces). The chunks are
        durable but unreferenced until `Ingested.commit` runs in a writer transaction.
        `observer`: see IngestRun.observer."""
        run = IngestRun(self.segments.lease(), observer=observer)
        ingested = Ingested(self, run)
        try:
            size, digests = await run_pipeline(self, run, source, expected_size=expected_size,
                                               size_cap=size_cap)
            await trio.to_thread.run_sync(self._sync_run, run)
        except BaseException:
            ingested.abandon()
            raise
        ingested._set(size, digests)
        return ingested

    def _sync_run(self, run: IngestRun) -> None:
        numbers = set(run.lease.spans) | {p.segment for p in run.borrowed.values()}
        self.segments.sync(numbers, directory=run.lease.created)

    def _classify(self, run: IngestRun, ids: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """Pin `ids` for `run` and sort them: chunks a concurrent run wrote are borrowed,
        indexed ones are `existing`; returns (claimed: this run must write them now,
        waiting: a concurrent run is writing them right now)."""
        lookup, waiting, missing = [], [], []
        with self._lock:
            for cid in ids:
                if cid not in run.pinned:
                    run.pinned.add(cid)
                    self._pins[cid] += 1
                if not self._borrow(run, cid, waiting):
                    # being dropped: the indexed copy may be gone when this run commits
                    (missing if cid in self._reaping else lookup).append(cid)
        with self.index.read() as txn:
            for cid in lookup:
                raw = txn.get(cid, db=self.db.chunks)
                if raw is not None and unpack(raw)[0] is not None:
                    run.existing.add(cid)
                else:
                    missing.append(cid)
        claimed = []
        with self._lock:
            for cid in missing:
                if not self._borrow(run, cid, waiting):
                    self._inflight[cid] = _Inflight(None, run)
                    claimed.append(cid)
        return claimed, waiting

    def _borrow(self, run: IngestRun, cid: bytes, waiting: list[bytes]) -> bool:
        """With the lock held: use what a concurrent run wrote (or is writing)."""
        other = self._inflight.get(cid)
        if other is None or other.owner is run:
            return False
        if other.placed is None:
            waiting.append(cid)
        else:
            other.borrowed = True
            run.borrowed[cid] = other.placed
            self._seg_pins[other.placed.segment] += 1
        return True

    def _register(self, run: IngestRun, placed: list[Placed], ids: list[bytes]) -> None:
        with self._lock:
            for cid, where in zip(ids, placed):
                item = self._inflight.get(cid)
                if item is not None and item.owner is run:
                    item.placed = where
            self._changed.notify_all()

    def _await_others(self, run: IngestRun, ids: list[bytes]) -> list[bytes]:
        """Wait until concurrent runs wrote `ids`; returns those they gave up on (or
        committed meanwhile), which the caller classifies again."""
        again = []
        with self._lock:
            for cid in ids:
                while True:
                    other = self._inflight.get(cid)
                    if other is None or other.owner is run or other.owner.finished:
                        again.append(cid)
                        break
                    if other.placed is not None:
                        self._borrow(run, cid, [])
                        break
                    self._changed.wait(1.0)
        return again

    def _finish(self, run: IngestRun, *, committed: bool) -> None:
        """Drop the in-memory state of a run (once)."""
        with self._lock:
            if run.finished:
                return
            run.finished = True
            lent = False
            for cid in run.new:
                item = self._inflight.get(cid)
                if item is not None and item.owner is run:
                    lent = lent or item.borrowed
                    del self._inflight[cid]
            for cid in [c for c, item in self._inflight.items() if item.owner is run]:
                del self._inflight[cid]                 # claims never written
            self._changed.notify_all()
            for cid in run.pinned:
                self._pins[cid] -= 1
                if self._pins[cid] <= 0:
                    del self._pins[cid]
            for where in run.borrowed.values():
                self._seg_pins[where.segment] -= 1
                if self._seg_pins[where.segment] <= 0:
                    del self._seg_pins[where.segment]
        if not committed and not lent:
            self.segments.rollback(run.lease)
        self.segments.release(run.lease)

    def is_pinned(self, cid: bytes) -> bool:
        with self._lock:
            return cid in self._pins

    def claim_drop(self, cid: bytes) -> bool:
        """For the reaper, inside its writer job: may `cid` be dropped (no ingest pins it)?
        Until `end_drops`, ingests that pin it write their own copy."""
        with self._lock:
            if cid in self._pins:
                return False
            self._reaping.add(cid)
            return True

    def end_drops(self, cids: set[bytes]) -> None:
        """The reaper's transaction ended (committed or not)."""
        with self._lock:
            self._reaping.difference_update(cids)

    def segment_pinned(self, number: int) -> bool:
        with self._lock:
            return number in self._seg_pins

    def _take_buffer(self, size: int) -> bytearray:
        with self._lock:
            for i, buf in enumerate(self._spare):
                if len(buf) == size:
                    return self._spare.pop(i)
        return bytearray(size)

    def _return_buffer(self, buf: bytearray) -> None:
        with self._lock:
            if len(self._spare) < _MAX_SPARE_BUFFERS:
                self._spare.append(buf)

    # -- release, cache marks ---------------------------------------------------------------
    def release(self, txn: Any, image_id: str) -> None:
        """Drop the manifest of `image_id` and its chunk references (in a writer txn)."""
        image = manifest.image_key(image_id)
        head = manifest.read_head(txn, self.db.manifests, image)
        if head is None:
            return
        now = ms(time.time())
        for cid, n in manifest.counts(txn, self.db.manifests, image, head).items():
            entry = self.db.get(txn, cid)
            if entry is None:
                continue
            entry.refcount = max(0, entry.refcount - n)
            if entry.refcount == 0:
                self.db.mark_unref(txn, cid, entry, now)
            self.db.put(txn, cid, entry)
        manifest.delete(txn, self.db.manifests, image, head)

    def has_manifest(self, txn: Any, image_id: str) -> bool:
        return manifest.read_head(txn, self.db.manifests, manifest.image_key(image_id)) is not None

    def image_chunks(self, image_id: str) -> list[bytes]:
        """Distinct chunk ids of an image (read txn)."""
        image = manifest.image_key(image_id)
        with self.index.read() as txn:
            head = manifest.read_head(txn, self.db.manifests, image)
            if head is None:
                return []
            return list(manifest.counts(txn, self.db.manifests, image, head))

    def mark_cache(self, txn: Any, ids: list[bytes], now: float | None = None) -> int:
        """Make resident chunks `cache`-resident (evictable by the pruner); returns how many
        changed. In a writer txn."""
        t = ms(time.time() if now is None else now)
        changed = 0
        for cid in ids:
            entry = self.db.get(txn, cid)
            if entry is not None and entry.residency != CACHE:
                self.db.cache(txn, cid, entry, t)
                self.db.put(txn, cid, entry)
                changed += 1
        return changed

    def mark_store(self, txn: Any, ids: list[bytes]) -> None:
        for cid in ids:
            entry = self.db.get(txn, cid)
            if entry is not None and entry.residency != STORE:
                self.db.uncache(txn, cid, entry)
                entry.residency = STORE
                self.db.put(txn, cid, entry)

    def record_access(self, ids: list[bytes], now: float | None = None) -> None:
        """Note reads of cache-resident chunks; the pruner writes them to the lru."""
        t = ms(time.time() if now is None else now)
        with self._lock:
            for cid in ids:
                self._accessed[cid] = t

    def record_verified(self, ids: list[bytes], now: float | None = None) -> None:
        """Note chunks a read has just verified; flush_access writes the time to the index
        (reads trust a chunk verified less than trust_verified_for ago). Bounded: past
        VERIFIED_NOTES pending notes, more are dropped (those chunks are verified again)."""
        t = ms(time.time() if now is None else now)
        with self._lock:
            for cid in ids[:max(0, VERIFIED_NOTES - len(self._verified))]:
                self._verified[cid] = t

    def flush_access(self, txn: Any) -> int:
        """Write the noted reads (lru times of cached chunks, verification times)."""
        with self._lock:
            accessed, self._accessed = self._accessed, {}
            verified, self._verified = self._verified, {}
        for cid in accessed.keys() | verified.keys():
            entry = self.db.get(txn, cid)
            if entry is None:
                continue
            if cid in accessed:
                self.db.touch(txn, cid, entry, accessed[cid])
            if cid in verified:
                entry.verified_at = max(entry.verified_at, verified[cid])
            self.db.put(txn, cid, entry)
        return len(accessed)

    # -- read -----------------------------------------------------------------------------
    def read(self, image_id: str, start: int = 0,
             end: int | None = None) -> AsyncIterator[memoryview]:
        """Bytes [start, end) of an image as verified memoryviews (see reader.py)."""
        from tessera.engine.reader import ChunkReader

        return ChunkReader(self, image_id, start, end)

    def size_of(self, image_id: str) -> int | None:
        with self.index.read() as txn:
            head = manifest.read_head(txn, self.db.manifests, manifest.image_key(image_id))
        return None if head is None else head.size

    def stats(self) -> dict[str, int]:
        return compute_stats(self.index)


class Ingested:
    """An ingest whose bytes are durable in segments but not yet referenced."""

    def __init__(self, store: ChunkStore, run: IngestRun) -> None:
        self._store = store
        self._run = run
        self.size = 0
        self.md5 = self.sha512 = self.blake3 = ""
        self.new_bytes = 0

    def _set(self, size: int, digests: Digests) -> None:
        self.size = size
        self.md5, self.sha512, self.blake3 = digests.md5, digests.sha512, digests.blake3
        self.new_bytes = self._run.new_bytes

    @property
    def zero_bytes(self) -> int:
        return self._run.log.zero_bytes

    @property
    def extents(self) -> int:
        return len(self._run.log)

    def chunk_ids(self) -> list[bytes]:
        """The distinct chunk ids of this ingest."""
        return list(self._run.log.counts())

    def view(self, cid: bytes) -> memoryview | None:
        """The bytes of a chunk this ingest wrote or borrowed (None: one already indexed,
        readable through the store)."""
        where = self._run.new.get(cid) or self._run.borrowed.get(cid)
        if where is None:
            return None
        return self._store.segments.view(where.segment, where.offset, where.length)

    def commit(self, txn: Any, image_id: str) -> None:
        """Write the manifest and take the chunk references, in the caller's writer txn."""
        store, run, db = self._store, self._run, self._store.db
        image = manifest.image_key(image_id)
        if txn.get(image, db=db.manifests) is not None:
            raise Conflict(f"image {image_id} already has data")
        manifest.write(txn, db.manifests, image, run.log)
        now = ms(time.time())
        size = store.cfg.segment_size
        for cid, n in run.log.counts().items():
            entry = db.get(txn, cid)
            where = run.new.get(cid) or run.borrowed.get(cid)
            if entry is None or not entry.resident:
                if where is None:
                    raise Conflict("a chunk of this upload was reclaimed while it ran; retry")
                if entry is None:
                    entry = ChunkEntry(None, 0, 0, 0, 0, STORE, now, 0, 0)
                entry.segment, entry.offset, entry.length, entry.header = \
                    where.segment, where.offset, where.length, where.header
                entry.verified_at = now
                db.add_live(txn, where.segment, entry.record_bytes)
                db.commit_length(txn, where.segment, where.group_end, size)
            if entry.refcount == 0:
                db.clear_unref(txn, cid, entry)
            entry.refcount += n
            if entry.residency == CACHE:
                db.uncache(txn, cid, entry)
                entry.residency = STORE
            db.put(txn, cid, entry)
        for number, (start, end) in run.lease.spans.items():
            if end > start:
                db.commit_length(txn, number, end, size)
        run.committed = True
        store._finish(run, committed=True)

    def abandon(self) -> None:
        """Give up: nothing is referenced; bytes nobody else uses are cut off again."""
        self._store._finish(self._run, committed=self._run.committed)


def compute_stats(index: Index) -> dict[str, int]:
    db = ChunkDB(index)
    out = {"images": 0, "logical_bytes": 0, "zero_bytes": 0, "manifests": 0, "chunks": 0,
           "stored_bytes": 0, "segment_bytes": 0, "segments": 0, "cache_bytes": 0,
           "unreferenced_chunks": 0}
    with index.read() as txn:
        out["images"] = txn.stat(db.images)["entries"]
        with txn.cursor(db=db.manifests) as cur:
            for key, raw in cur:
                if len(key) == 16:
                    head = manifest.Head.load(raw)
                    out["manifests"] += 1
                    out["logical_bytes"] += head.size
                    out["zero_bytes"] += head.zero
        with txn.cursor(db=db.chunks) as cur:
            for _key, raw in cur:
                entry = ChunkEntry.unpack(raw)
                if entry.resident:
                    out["chunks"] += 1
                    out["stored_bytes"] += entry.length
                if entry.refcount == 0:
                    out["unreferenced_chunks"] += 1
        for seg in db.all_segments(txn).values():
            out["segments"] += 1
            out["segment_bytes"] += seg.committed
        out["cache_bytes"] = db.cache_bytes(txn)
    return out
