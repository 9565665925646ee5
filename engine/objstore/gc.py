# The reaper of an `s3` store: the local reaper's work on the cache tier (drop unreferenced
# chunks after the grace period, compact segments) plus the object tier's collection:
# mappings of dropped chunks go, packs whose live share fell low are rewritten, objects
# nothing maps into are deleted, and this index's own objects (packs/<writer>/) that it does
# not know (left by a crash or a failed upload) are deleted once seen for longer than the
# grace; so are its multipart uploads under that prefix initiated more than the grace ago
# (a process that died mid-upload leaves their parts behind). Objects of other writers
# sharing the bucket are never listed, repacked nor deleted: a row naming one (installed
# from a cluster peer's document) is dropped when nothing maps into it, leaving the object
# to its writer.
# Invariants:
# - An object is deleted only when no mapping names it (its row was removed in a writer
#   transaction that saw no chunk in it) or it never had a row; every chunk of a committed
#   manifest has a mapping (objdb.py), so an object a manifest references is never deleted.
# - Repacking copies live chunks (BLAKE3-verified: bad bytes are never copied forward) into
#   a new pack, PUTs and HEAD-verifies it, then moves the mappings that still point at the
#   old objects in one transaction, and only then deletes the old objects. A crash at any
#   step leaves either the old or the new object mapped and the other unindexed: garbage
#   that a later pass deletes.
# - One collection runs at a time per store.
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from tessera.engine.chunkdb import ms
from tessera.engine.chunkid import digest
from tessera.engine.errors import TesseraError, Unavailable
from tessera.engine.objstore.objdb import Loc
from tessera.engine.objstore.packs import PACKS_DIR, build_pack, pack_digest, parse_object_key
from tessera.engine.reaper import Reaper, ReapResult

log = logging.getLogger("tessera.objstore")

SCAN_BATCH = 5000
# A pack is rewritten only if that gives back at least this much: a pack of a tiny image is
# mostly headers and padding and would otherwise be rewritten on every pass.
MIN_DEAD_BYTES = 1024 * 1024
# A repacked pack is assembled in memory (its live chunks, then the pack): at most this much.
REPACK_MAX = 32 * 1024 * 1024


@dataclass
class CollectResult:
    unmapped: int = 0             # mappings of dropped chunks removed
    repacked_objects: int = 0     # packs rewritten (and deleted)
    new_objects: int = 0          # packs written by repacking
    moved_chunks: int = 0
    moved_bytes: int = 0
    dead_objects: int = 0         # deleted: nothing mapped into them any more
    orphans: int = 0              # deleted: unknown to the index past the grace
    aborted_uploads: int = 0      # own multipart uploads initiated more than the grace ago
    skipped: list[str] = field(default_factory=list)


class _Recorder(set):
    """Stands in for the reaper's `claimed` set to learn which chunks a drop job dropped."""

    def __init__(self, base: set) -> None:
        super().__init__()
        self.base = base
        self.added: list[bytes] = []

    def add(self, cid: bytes) -> None:
        self.base.add(cid)
        self.added.append(cid)


class TierReaper(Reaper):
    def __init__(self, store: Any, tier: Any) -> None:
        super().__init__(store)
        self.tier = tier
        self._seen: dict[bytes, float] = {}      # unindexed object -> first seen (seconds)
        self._lock = trio.Lock()
        self.collected = CollectResult()
        self.last: CollectResult | None = None

    # the drop job of the local reaper: a dropped chunk's mapping goes in the same txn
    def _drop(self, txn: Any, cutoff: int, claimed: set[bytes]) -> tuple[int, int, bool]:
        rec = _Recorder(claimed)
        out = super()._drop(txn, cutoff, rec)
        for cid in rec.added:
            self.tier.db.unmap(txn, cid)
        return out

    async def run_once(self, *, now: float | None = None, grace: float | None = None,
                       compact: bool = True) -> ReapResult:
        result = await super().run_once(now=now, grace=grace, compact=compact)
        self.last = None
        try:
            self.last = await self.collect(now=now, grace=grace)
        except TesseraError as exc:          # the object store is away: next round
            log.warning("store %s: object collection failed: %s", self.tier.conf.store_id,
                        exc.message or type(exc).__name__)
        return result

    def statistics(self) -> dict[str, Any]:
        c = self.collected
        return {**super().statistics(), "unmapped_chunks": c.unmapped,
                "repacked_objects": c.repacked_objects, "dead_objects": c.dead_objects,
                "orphan_objects": c.orphans, "aborted_uploads": c.aborted_uploads,
                "moved_object_bytes": c.moved_bytes}

    async def collect(self, *, now: float | None = None,
                      grace: float | None = None) -> CollectResult:
        now = time.time() if now is None else now
        grace = self.store.cfg.reaper_grace if grace is None else grace
        result = CollectResult()
        async with self._lock:
            members = await self._unmap_dropped(result)
            await self._repack(members, result)
            await self._delete_dead(result)
            await self._delete_orphans(result, now, grace)
            await self._abort_uploads(result, now, grace)
        total = self.collected
        for name in ("unmapped", "repacked_objects", "new_objects", "moved_chunks",
                     "moved_bytes", "dead_objects", "orphans", "aborted_uploads"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        return result

    # -- mappings of chunks that are gone ---------------------------------------------------
    async def _unmap_dropped(self, result: CollectResult) -> dict[bytes, list]:
        """Remove mappings whose chunk entry is gone (the pruner drops unreferenced cache
        chunks); returns the mappings of repack candidates, by object."""
        db, index = self.tier.db, self.store.index
        with index.read() as txn:
            rows = db.rows(txn)
        members: dict[bytes, list] = {obj: [] for obj, row in rows.items()
                                      if self._worth_repacking(row)}

        def page(after: bytes | None) -> tuple[list[bytes], bytes | None]:
            """One short read transaction over the next SCAN_BATCH mappings."""
            stale, last = [], None
            with index.read() as txn:
                for cid, loc in db.iter_locs(txn, after=after, limit=SCAN_BATCH):
                    last = cid
                    if not db.has_chunk_entry(txn, cid):
                        stale.append(cid)
                    elif loc.obj in members:
                        members[loc.obj].append((cid, loc))
            return stale, last

        def unmap(txn: Any, batch: list[bytes]) -> int:
            n = 0
            for cid in batch:
                if not db.has_chunk_entry(txn, cid) and db.unmap(txn, cid) is not None:
                    n += 1
            return n

        after: bytes | None = None
        while True:
            stale, after = await trio.to_thread.run_sync(page, after)
            if stale:
                result.unmapped += await index.writer.run(lambda t, b=stale: unmap(t, b))
            if after is None:
                break
        return {obj: m for obj, m in members.items() if m}

    def _worth_repacking(self, row: Any) -> bool:
        if row.chunks == 0 or row.size == 0 or row.foreign:   # another writer's pack
            return False
        return row.live / row.size < self.tier.conf.repack_below and \
            row.size - row.live >= MIN_DEAD_BYTES

    # -- repacking --------------------------------------------------------------------------
    async def _repack(self, members: dict[bytes, list], result: CollectResult) -> None:
        target = min(self.tier.conf.pack_size, REPACK_MAX)      # built in memory
        group: list[bytes] = []
        size = 0
        for obj in sorted(members, key=lambda o: sum(loc.length for _, loc in members[o])):
            live = sum(loc.length for _, loc in members[obj])
            if group and size + live > target:
                await self._rewrite(group, members, result)
                group, size = [], 0
            group.append(obj)
            size += live
        if group:
            await self._rewrite(group, members, result)

    async def _rewrite(self, objs: list[bytes], members: dict[bytes, list],
                       result: CollectResult) -> None:
        tier, db = self.tier, self.tier.db
        wanted = {cid: loc for obj in objs for cid, loc in members[obj]}
        data = await self._chunk_bytes(wanted)
        if data is None:
            result.skipped.append(f"objects {[o.hex()[:12] for o in objs]}: unreadable chunks")
            return
        items = [(cid, data[cid]) for cid in sorted(wanted, key=lambda c: (wanted[c].obj,
                                                                           wanted[c].offset))]
        packed, chunks = await trio.to_thread.run_sync(build_pack, items)
        new = await trio.to_thread.run_sync(pack_digest, packed)
        del data, items
        key = tier.key(new)
        tier.register(new)
        try:
            await tier._wait_deleted(new)
            await tier.client.put_bytes(key, packed)
            size = await tier.client.head(key)
            if size != len(packed):
                raise Unavailable(f"object {key} reads back as {size} bytes, "
                                  f"{len(packed)} were written")
            old = set(objs)
            created = ms(time.time())

            def move(txn: Any) -> tuple[list[bytes], int, int]:
                db.add_object(txn, new, len(packed), created)
                moved = moved_bytes = 0
                for pc in chunks:
                    cur = db.loc(txn, pc.cid)
                    if cur is not None and cur.obj in old:
                        db.map(txn, pc.cid, Loc(new, pc.offset, pc.length))
                        moved += 1
                        moved_bytes += pc.length
                removed = [obj for obj in objs if db.remove_if_dead(txn, obj)]
                return removed, moved, moved_bytes

            removed, moved, moved_bytes = await self.store.index.writer.run(move)
        finally:
            tier.unregister(new)
        result.new_objects += 1
        result.moved_chunks += moved
        result.moved_bytes += moved_bytes
        for obj in removed:
            if await tier.delete_object(obj, lambda txn, o=obj: db.row(txn, o) is None):
                result.repacked_objects += 1

    async def _chunk_bytes(self, wanted: dict[bytes, Loc]) -> dict[bytes, bytes] | None:
        """Verified bytes of `wanted`: the local cache copy where there is one, else ranged
        reads of the objects. None if any chunk could not be read intact."""
        store = self.store

        def local() -> dict[bytes, bytes]:
            out = {}
            with store.index.read() as txn:
                entries = {cid: store.db.get(txn, cid) for cid in wanted}
            for cid, entry in entries.items():
                if entry is None or not entry.resident:
                    continue
                try:
                    view = store.segments.view(entry.segment, entry.offset, entry.length)
                except Exception:     # compacted meanwhile: read it from the object
                    continue
                if digest(view) == cid:
                    out[cid] = bytes(view)
            return out

        out = await trio.to_thread.run_sync(local)
        rest = {cid: loc for cid, loc in wanted.items() if cid not in out}
        if rest:
            got, _gone = await self.tier.reader.read(rest)
            bad = await trio.to_thread.run_sync(
                lambda: [cid for cid, b in got.items() if digest(b) != cid])
            if bad or len(got) < len(rest):
                return None
            out.update(got)
        return out

    # -- deleting ---------------------------------------------------------------------------
    async def _delete_dead(self, result: CollectResult) -> None:
        tier, db = self.tier, self.tier.db
        with self.store.index.read() as txn:
            dead = [obj for obj, row in db.rows(txn).items() if row.chunks == 0]
        if not dead:
            return

        def drop(txn: Any) -> list[bytes]:
            out = []
            for obj in dead:
                row = db.row(txn, obj)
                if db.remove_if_dead(txn, obj) and not row.foreign:
                    out.append(obj)        # another writer's pack: only its row goes
            return out

        for obj in await self.store.index.writer.run(drop):
            if await tier.delete_object(obj, lambda txn, o=obj: db.row(txn, o) is None):
                result.dead_objects += 1

    async def _delete_orphans(self, result: CollectResult, now: float, grace: float) -> None:
        tier, db = self.tier, self.tier.db
        listed = await tier.client.list(f"{PACKS_DIR}{tier.writer}/")
        with self.store.index.read() as txn:
            unknown = []
            for key, _size in listed:
                obj = parse_object_key(tier.writer, key)
                if obj is not None and db.row(txn, obj) is None:
                    unknown.append(obj)
        self._seen = {obj: self._seen.get(obj, now) for obj in unknown}
        for obj in unknown:
            if now - self._seen[obj] < grace:
                continue
            if await tier.delete_object(obj, lambda txn, o=obj: db.row(txn, o) is None):
                self._seen.pop(obj, None)
                result.orphans += 1

    async def _abort_uploads(self, result: CollectResult, now: float, grace: float) -> None:
        """Abort this writer's multipart uploads initiated more than `grace` ago: a running
        upload is younger (its pack is PUT within the grace), an older one was left by a
        crash. Other writers' prefixes are never listed."""
        tier = self.tier
        for key, upload_id, initiated in await tier.client.list_uploads(
                f"{PACKS_DIR}{tier.writer}/"):
            if now - initiated < grace:
                continue
            await tier.client.abort_upload(key, upload_id)
            result.aborted_uploads += 1
