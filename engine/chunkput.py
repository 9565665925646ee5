# Putting chunks that arrived from elsewhere (a peer, an object store, an image's origin)
# into one chunk store, and reading single held chunks back. Used by downloads that fill
# the cache tier (engine/chunkfill.py) and by the replica facade (repairs, pushes).
# Invariants:
# - Every chunk is hashed before it is written; a mismatch is refused (CorruptData) and
#   nothing of that batch is kept.
# - A chunk already held is not written again (idempotent puts).
# - `store=False` keeps chunks with `cache` residency (the pruner may evict them);
#   `durable=False` skips the fsync of the bytes: after a crash such a chunk may fail
#   verification, which every reader and the auditor detect (it is then fetched again).
from __future__ import annotations

import time
from typing import Any

import trio

from tessera.engine import manifest
from tessera.engine.chunkdb import CACHE, STORE, ChunkEntry, ms, time_key
from tessera.engine.chunkid import digest
from tessera.engine.errors import CorruptData
from tessera.engine.index import unpack


def missing(cs: Any, ids: list[bytes]) -> list[bytes]:
    """Those of `ids` the chunk store `cs` does not hold."""
    out = []
    with cs.index.read() as txn:
        for cid in ids:
            raw = txn.get(cid, db=cs.db.chunks)
            if raw is None or unpack(raw)[0] is None:
                out.append(cid)
    return out


def held_bytes(cs: Any, ids: list[bytes], verify: bool = True) -> dict[bytes, bytes]:
    """The bytes of those of `ids` that `cs` holds (blocking: call from a worker thread).
    A chunk that is not held, or (with `verify`) whose bytes fail verification, is left
    out. `verify=False` is for bytes whose receiver hashes them anyway (a peer's read)."""
    out: dict[bytes, bytes] = {}
    with cs.index.read() as txn:
        where = [(cid, unpack(raw)) for cid in ids
                 if (raw := txn.get(cid, db=cs.db.chunks)) is not None]
    for cid, e in where:
        if e[0] is None:
            continue
        try:
            data = bytes(cs.segments.view(e[0], e[1], e[2]))
        except Exception:
            continue
        if not verify or digest(data) == cid:
            out[cid] = data
    return out


async def put_chunks(cs: Any, items: list[tuple[bytes, bytes]], *, store: bool,
                     durable: bool = True, verified: bool = False) -> int:
    """Keep chunks in `cs` (`store` residency or `cache`); returns how many were new.
    `verified=True` skips the hash when the caller has just hashed the same bytes."""

    def write() -> tuple[Any, list]:
        if not verified:
            for cid, data in items:
                if digest(data) != cid:
                    raise CorruptData(f"chunk {cid.hex()} failed verification")
        lacking = set(missing(cs, [cid for cid, _ in items]))
        fresh = [(cid, memoryview(data)) for cid, data in items if cid in lacking]
        lease = cs.segments.lease()
        try:
            placed = lease.append(fresh) if fresh else []
            if durable:
                cs.segments.sync({p.segment for p in placed}, directory=lease.created)
        except BaseException:           # StorageFull, I/O errors: nothing is kept
            cs.segments.rollback(lease)
            cs.segments.release(lease)
            raise
        return lease, list(zip([c for c, _ in fresh], placed))

    lease, placed = await trio.to_thread.run_sync(write)
    size = cs.cfg.segment_size
    db = cs.db

    def index(txn: Any) -> int:
        # per chunk: one get and one put (plus its lru key); segment and cache totals once
        now, added, cached = ms(time.time()), 0, 0
        live: dict[int, int] = {}
        ends: dict[int, int] = {}
        for cid, where in placed:
            entry = db.get(txn, cid)
            if entry is not None and entry.resident:
                continue
            if entry is None:
                entry = ChunkEntry(None, 0, 0, 0, 0, STORE, now, 0, 0)
                db.mark_unref(txn, cid, entry, now)
            entry.segment, entry.offset, entry.length, entry.header = \
                where.segment, where.offset, where.length, where.header
            entry.verified_at = now
            live[where.segment] = live.get(where.segment, 0) + entry.record_bytes
            ends[where.segment] = max(ends.get(where.segment, 0), where.group_end)
            if store:
                entry.residency = STORE
            else:
                entry.residency, entry.accessed_at = CACHE, max(now, 1)
                txn.put(time_key(entry.accessed_at, cid), b"", db=db.lru)
                cached += entry.length
            db.put(txn, cid, entry)
            added += 1
        for number, (_start, end) in lease.spans.items():
            if end > _start:
                ends[number] = max(ends.get(number, 0), end)
        for number, delta in live.items():
            db.add_live(txn, number, delta)
        for number, end in ends.items():
            db.commit_length(txn, number, end, size)
        if cached:
            db.add_cache_bytes(txn, cached)
        return added

    try:
        return await cs.index.writer.run(index)
    finally:
        cs.segments.release(lease)


def install_manifest(cs: Any, txn: Any, key: bytes, extents: list, *, residency: int,
                     now: int) -> None:
    """Write an image's manifest that arrived from elsewhere (a peer's document) into `cs`
    and reference its chunks; those not known here get a non-resident entry of
    `residency` (a read or a repair fills them)."""
    log = manifest.ExtentLog()
    for cid, length in extents:
        if cid is None:
            log.add_zero(length)
        else:
            log.add_data(bytes(cid), length)
    manifest.write(txn, cs.db.manifests, key, log)
    db = cs.db
    for cid, n in log.counts().items():
        entry = db.get(txn, cid)
        if entry is None:
            entry = ChunkEntry(None, 0, 0, 0, 0, residency, now, 0, 0)
        if entry.refcount == 0:
            db.clear_unref(txn, cid, entry)
        entry.refcount += n
        db.put(txn, cid, entry)
