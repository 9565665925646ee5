# The replica facade: what a replication layer needs from one node's engine, and nothing of
# peers or sockets. Image documents (record + members + manifest) with version stamps,
# verified chunk puts and reads, and ordered listings for digest comparison.
# Invariants:
# - Every image change made on this node is stamped in the same writer transaction (the
#   catalog's observer): stamps[id16] = clock(). Without a clock (a single node) nothing is
#   stamped and nothing is observed.
# - apply_doc() is last-writer-wins on the stamp: a document not newer than the local one
#   changes nothing. Manifests are immutable: a document only adds a missing manifest or
#   drops one for a deleted image. Chunks a new manifest references but this node does not
#   hold get a non-resident entry (segment None) until a peer pushes or a read fetches them.
# - put_chunks() hashes every chunk (in a worker thread) before writing; a mismatch is
#   refused (CorruptData) and nothing of that chunk is kept.
# - Tombstones (status `deleted`) are dropped only by reclaim(), which also raises the
#   persisted reclaim watermark (`replica/horizon` in `meta`: the highest stamp of a
#   reclaimed tombstone). apply_doc() refuses a document for an image this node has no
#   record of whose stamp is not above the watermark: it can only be an older version of a
#   reclaimed image (docs/replication-protocol.md, "Tombstones"). drop_stale() removes such
#   a version held here (the same end state as its tombstone, then reclaimed).
# - Hints (the updater's queue of writes for unreachable peers) persist through
#   `replica.hints` (engine/replicahints.py).
# - s3 stores shared by the cluster (same store id, same bucket): a document also carries,
#   per s3 store the image is in, that store's manifest and chunk locations in the bucket
#   (engine/objstore/shared.py); a node with that store configured installs them into its
#   own s3 store BEFORE the record (a separate index; a leftover is released by
#   stores.reconcile). A node without it ignores them (the image is not readable there).
#   Local non-default stores are not replicated. A record that drops a store (or a
#   tombstone) releases this node's copy in it after the record commits.
# - The replication layer reaches LMDB only through these methods.
from __future__ import annotations

import collections
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import trio

from tessera.engine import chunkput, chunkruns, manifest
from tessera.engine.chunkdb import CACHE, STORE, ChunkEntry, ms
from tessera.engine.chunkid import digest
from tessera.engine.errors import CorruptData
from tessera.engine.imgindex import member_index_key
from tessera.engine.objstore import shared
from tessera.engine.index import unpack
from tessera.engine.reader import FileRange
from tessera.engine.records import (decode_image, decode_member, encode_member, id_from_key,
                                    id_key)
from tessera.engine.replicahints import ReplicaHints
from tessera.engine.states import UNLISTED

_STAMP = struct.Struct(">Q")
_HORIZON = b"replica/horizon"


class Replica:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.index = engine.index
        self.catalog = engine.catalog
        self.chunks = engine.chunks
        self.stamps = engine.index.db("stamps")
        self.meta = engine.index.db("meta")
        self.hints = ReplicaHints(engine.index)
        self.clock: Callable[[int | None], int] | None = None    # HLC, installed by the root
        self.changed: Callable[[str, int], None] | None = None   # after-change notification
        self._applying = threading.local()

    def install(self, clock: Callable[[int | None], int],
                changed: Callable[[str, int], None]) -> None:
        """Start stamping local changes with `clock(None)`; `clock(remote)` merges a remote
        stamp. `changed(image_id, stamp)` is called (from the writer thread) for every local
        change before its transaction commits: the callee reads the document once
        stamp_of(image_id) >= stamp (a transaction that is rolled back never gets there)."""
        self.clock = clock
        self.changed = changed
        self.catalog.observer = self._observe

    def _observe(self, txn: Any, image_id: str) -> None:
        if getattr(self._applying, "on", False) or self.clock is None:
            return
        stamp = self.clock(None)
        txn.put(id_key(image_id), _STAMP.pack(stamp), db=self.stamps)
        if self.changed is not None:
            self.changed(image_id, stamp)

    # -- stamps ---------------------------------------------------------------------------
    def stamp_of(self, image_id: str) -> int:
        with self.index.read() as txn:
            raw = txn.get(id_key(image_id), db=self.stamps)
        return 0 if raw is None else _STAMP.unpack(raw)[0]

    def iter_stamps(self) -> Iterator[tuple[bytes, int]]:
        """(id16, stamp) in key order (one short read txn, materialized in slices)."""
        after = b""
        while True:
            batch = []
            with self.index.read() as txn:
                cur = txn.cursor(db=self.stamps)
                ok = cur.set_range(after) if after else cur.first()
                while ok and len(batch) < 4096:
                    key = bytes(cur.key())
                    if key != after:
                        batch.append((key, _STAMP.unpack(cur.value())[0]))
                    ok = cur.next()
            if not batch:
                return
            yield from batch
            after = batch[-1][0]
            if len(batch) < 4095:
                return

    # -- image documents ------------------------------------------------------------------
    def export_doc(self, image_id: str) -> dict | None:
        """The replicated state of one image: record, members, manifest extents, stamp."""
        key = id_key(image_id)
        with self.index.read() as txn:
            raw = txn.get(key, db=self.catalog.images)
            if raw is None:
                return None
            st = txn.get(key, db=self.stamps)
            members = []
            cur = txn.cursor(db=self.catalog.members)
            ok = cur.set_range(key)
            while ok and bytes(cur.key()[:16]) == key:
                members.append([bytes(cur.key()[16:]).decode(), bytes(cur.value())])
                ok = cur.next()
            db = self.chunks.db.manifests
            head = manifest.read_head(txn, db, key)
            extents = None
            if head is not None:
                extents = []
                for number in range(len(head.pages)):
                    page = manifest.read_page(txn, db, key, number)
                    extents.extend([cid, n] for cid, n in zip(page.ids, page.lengths))
        return {"id": image_id, "stamp": 0 if st is None else _STAMP.unpack(st)[0],
                "record": bytes(raw), "members": members, "extents": extents,
                "objstores": self._export_objstores(image_id, decode_image(bytes(raw)))}

    def _tiers(self, names: Any) -> dict[str, Any]:
        """The object tiers of those of `names` that are s3 stores configured here."""
        stores = getattr(self.engine, "stores", None)
        if stores is None:
            return {}
        out = {}
        for name in stores.others_of(tuple(names)):
            tier = getattr(stores.get(name), "tier", None)
            if tier is not None:
                out[name] = tier
        return out

    def _export_objstores(self, image_id: str, rec: Any) -> dict:
        if rec.status == "deleted":
            return {}
        out = {}
        for name, tier in self._tiers(rec.stores).items():
            part = shared.export(tier, image_id)
            if part is not None:
                out[name] = part
        return out

    async def _install_objstores(self, image_id: str, stamp: int, new: Any,
                                 parts: dict) -> None:
        """A newer document's s3 store parts, into the s3 stores configured here."""
        if not parts or new.status == "deleted" or self.stamp_of(image_id) >= stamp:
            return
        for name, tier in self._tiers(new.stores).items():
            part = parts.get(name)
            if part is not None:
                await tier.store.index.writer.run(
                    lambda txn, t=tier, p=part: shared.install(t, txn, image_id, p))

    async def apply_doc(self, doc: dict) -> bool:
        """Last-writer-wins: install `doc` if its stamp is newer than ours. True if applied."""
        image_id, stamp = doc["id"], int(doc["stamp"])
        key = id_key(image_id)
        new = decode_image(doc["record"])
        if new.id != image_id:
            raise CorruptData(f"document {image_id} holds record {new.id}")
        if self.clock is not None:
            self.clock(stamp)
        cat, store = self.catalog, self.chunks
        await self._install_objstores(image_id, stamp, new, doc.get("objstores") or {})
        stores = getattr(self.engine, "stores", None)
        dropped: list[str] = []

        def apply(txn: Any) -> bool:
            raw = txn.get(key, db=self.stamps)
            if raw is not None and _STAMP.unpack(raw)[0] >= stamp:
                return False
            if raw is None and stamp <= self._horizon(txn) and \
                    txn.get(key, db=cat.images) is None:
                return False        # an older version of an image whose tombstone was reclaimed
            self._applying.on = True
            try:
                old = cat.load(txn, image_id)
                if old is not None and stores is not None:
                    keep = [] if new.status == "deleted" else stores.others_of(new.stores)
                    dropped[:] = [n for n in stores.others_of(old.stores) if n not in keep]
                stored = cat.store(txn, old, new)
                self._apply_members(txn, stored, doc["members"])
                has = store.has_manifest(txn, image_id)
                if has and (doc["extents"] is None or not new.stores):
                    store.release(txn, image_id)
                elif not has and doc["extents"] is not None and new.stores:
                    self._add_manifest(txn, key, doc["extents"])
                txn.put(key, _STAMP.pack(stamp), db=self.stamps)
            finally:
                self._applying.on = False
            return True

        applied = await cat.run(apply)
        for name in dropped if applied else ():    # after the record (engine/stores.py)
            await stores.release(name, image_id)
        return applied

    def _apply_members(self, txn: Any, image: Any, members: list) -> None:
        db, idx, key = self.catalog.members, self.catalog.idx, id_key(image.id)
        cur = txn.cursor(db=db)
        old = []
        ok = cur.set_range(key)
        while ok and bytes(cur.key()[:16]) == key:
            old.append(bytes(cur.key()[16:]).decode())
            ok = cur.next()
        for member_id in old:
            txn.delete(key + member_id.encode(), db=db)
            txn.delete(member_index_key(image, member_id), db=idx)
        for member_id, raw in members:
            rec = decode_member(image.id, member_id, raw)
            txn.put(key + member_id.encode(), encode_member(rec), db=db)
            if image.status not in UNLISTED:
                txn.put(member_index_key(image, member_id), b"", db=idx)

    def _add_manifest(self, txn: Any, key: bytes, extents: list) -> None:
        chunkput.install_manifest(self.chunks, txn, key, extents, residency=STORE,
                                  now=ms(time.time()))

    # -- chunks ---------------------------------------------------------------------------
    def missing(self, ids: list[bytes]) -> list[bytes]:
        """Those of `ids` this node does not hold."""
        out = []
        with self.index.read() as txn:
            for cid in ids:
                raw = txn.get(cid, db=self.chunks.db.chunks)
                if raw is None or unpack(raw)[0] is None:
                    out.append(cid)
        return out

    async def hold(self, ids: list[bytes]) -> list[bytes]:
        """Those of `ids` this node does not hold; the held ones no manifest references yet
        (a peer's write whose document has not arrived) restart their reaper grace now, so
        they outlive the confirmation by at least `reaper_grace`."""
        db = self.chunks.db

        def touch(txn: Any) -> list[bytes]:
            now, out = ms(time.time()), []
            for cid in ids:
                entry = db.get(txn, cid)
                if entry is None or not entry.resident:
                    out.append(cid)
                elif entry.refcount == 0:
                    db.clear_unref(txn, cid, entry)
                    db.mark_unref(txn, cid, entry, now)
                    db.put(txn, cid, entry)
            return out

        return await self.chunks.index.writer.run(touch)

    def _held(self, cid: bytes) -> ChunkEntry | None:
        """The index entry of a chunk this node holds; None if unknown or not resident."""
        with self.index.read() as txn:
            raw = txn.get(cid, db=self.chunks.db.chunks)
        if raw is None:
            return None
        e = ChunkEntry.unpack(raw)
        return e if e.resident else None

    def chunk_bytes(self, cid: bytes) -> bytes | None:
        """A held chunk's bytes, verified; None if not held or failing verification."""
        return chunkput.held_bytes(self.chunks, [cid]).get(cid)

    async def read_chunks(self, ids: list[bytes], *,
                          verify: bool = True) -> list[bytes | None]:
        """Held chunks' bytes (None for those not held or, with `verify`, failing their
        hash). `verify=False` serves a peer's read: the receiver hashes every chunk."""
        got = await trio.to_thread.run_sync(chunkput.held_bytes, self.chunks, ids, verify)
        rest = [c for c in ids if c not in got]
        if rest:
            got.update(await self._tier_bytes(rest, verify))
        return [got.get(c) for c in ids]

    async def chunk_runs(self, ids: list[bytes]) -> tuple[list[int | None], list[Any]]:
        """A peer's raw read of held chunks, unverified (the receiver hashes every chunk):
        each of `ids`' length (None if not held here) and the held ones' bytes in that order
        as parts to send: file runs (engine/reader.py FileRange, for sendfile) from the
        chunk store, bytes for chunks only this node's s3 stores hold."""
        lengths, runs = await trio.to_thread.run_sync(chunkruns.plan, self.chunks, ids)
        rest = [c for c, n in zip(ids, lengths) if n is None]
        tier = await self._tier_bytes(rest, False) if rest else {}
        if not tier:
            return lengths, runs
        # interleave the tier's bytes with the runs, in the order of `ids`
        parts: list[Any] = []
        queue = collections.deque(runs)
        left = 0                              # bytes of queue[0] not yet placed
        out_lengths: list[int | None] = []
        for cid, n in zip(ids, lengths):
            if n is None:
                data = tier.get(cid)
                out_lengths.append(None if data is None else len(data))
                if data is not None:
                    parts.append(data)
                continue
            out_lengths.append(n)
            if left == 0:
                run = queue[0]
                left = run.length
            run = queue[0]
            piece = FileRange(run.file, run.offset + run.length - left, n)
            parts.append(piece)
            left -= n
            if left == 0:
                queue.popleft()
        return out_lengths, parts

    async def _tier_bytes(self, ids: list[bytes], verify: bool) -> dict[bytes, bytes]:
        """Chunks of this node's s3 stores: their cache tier, then this node's own packs
        (a peer whose mapping names a pack this node repacked asks here)."""
        stores = getattr(self.engine, "stores", None)
        out: dict[bytes, bytes] = {}
        if stores is None:
            return out
        for c in stores.configs:
            tier = getattr(stores.get(c.id), "tier", None) if c.type == "s3" else None
            rest = [cid for cid in ids if cid not in out]
            if tier is None or not rest:
                continue
            out.update(await trio.to_thread.run_sync(chunkput.held_bytes, tier.store, rest,
                                                     verify))
            locs = {cid: loc for cid, loc in tier.locate(rest).items()
                    if cid not in out and not tier.is_foreign(loc.obj)}
            if locs:
                got, _gone = await tier.reader.read(locs)
                if verify:
                    got = {cid: b for cid, b in got.items() if digest(b) == cid}
                out.update(got)
        return out

    async def put_chunks(self, items: list[tuple[bytes, bytes]], *, store: bool,
                         durable: bool = True) -> int:
        """Verify and keep chunks that arrived from a peer (`store`: this node owns them,
        else `cache` residency). Returns how many were new here (engine/chunkput.py)."""
        return await chunkput.put_chunks(self.chunks, items, store=store, durable=durable)

    def verify_chunk(self, cid: bytes) -> bool | None:
        """Rehash one held chunk: True if good, False if its bytes fail, None if not held."""
        e = self._held(cid)
        if e is None:
            return None
        try:
            view = self.chunks.segments.view(e.segment, e.offset, e.length)
        except Exception:
            return False
        return digest(view) == cid

    async def quarantine(self, ids: list[bytes]) -> int:
        """Stop holding chunks whose bytes failed verification: their entries become
        non-resident (manifests still reference them; a peer's copy refills them). The bad
        bytes stay in their segment as dead space until compaction."""
        db = self.chunks.db

        def drop(txn: Any) -> int:
            n = 0
            for cid in ids:
                entry = db.get(txn, cid)
                if entry is None or not entry.resident:
                    continue
                db.uncache(txn, cid, entry)
                db.add_live(txn, entry.segment, -entry.record_bytes)
                entry.segment, entry.offset, entry.length, entry.header = None, 0, 0, 0
                if entry.refcount == 0:
                    db.drop(txn, cid, entry)
                else:
                    db.put(txn, cid, entry)
                n += 1
            return n

        n = await self.chunks.index.writer.run(drop)
        self.chunks.runs.invalidate()         # no remembered download batch serves them
        return n

    async def promote(self, ids: list[bytes]) -> None:
        """Make held chunks `store`-resident (this node owns them), their bytes fsynced
        first."""
        cs = self.chunks
        with self.index.read() as txn:
            segments = {e[0] for e in (unpack(r) for r in
                                       (txn.get(c, db=cs.db.chunks) for c in ids) if r)
                        if e[0] is not None}
        await trio.to_thread.run_sync(cs.segments.sync, segments)
        await cs.index.writer.run(lambda txn: cs.mark_store(txn, ids))

    async def demote(self, ids: list[bytes]) -> int:
        """Make held `store` chunks `cache`-resident (this node no longer owns them and the
        owners hold them); the pruner may then evict them."""
        cs = self.chunks
        return await cs.index.writer.run(lambda txn: cs.mark_cache(txn, ids))

    def iter_chunks(self) -> Iterator[tuple[bytes, bool, int, bool]]:
        """(chunk id, held here, refcount, cache-resident) in id order, read in slices."""
        after = b""
        db = self.chunks.db.chunks
        while True:
            batch = []
            with self.index.read() as txn:
                cur = txn.cursor(db=db)
                ok = cur.set_range(after) if after else cur.first()
                while ok and len(batch) < 8192:
                    key = bytes(cur.key())
                    if key != after:
                        e = unpack(cur.value())
                        batch.append((key, e[0] is not None, e[4], e[5] == CACHE))
                    ok = cur.next()
            if not batch:
                return
            yield from batch
            after = batch[-1][0]

    def image_ids(self) -> list[str]:
        with self.index.read() as txn:
            return [id_from_key(bytes(k)) for k, _ in txn.cursor(db=self.catalog.images)]


    # -- tombstones -----------------------------------------------------------------------
    def _horizon(self, txn: Any) -> int:
        raw = txn.get(_HORIZON, db=self.meta)
        return 0 if raw is None else _STAMP.unpack(raw)[0]

    def horizon(self) -> int:
        """The reclaim watermark: the highest stamp of a tombstone reclaimed here (0: none)."""
        with self.index.read() as txn:
            return self._horizon(txn)

    def tombstones(self, before: int | None = None) -> list[tuple[str, int]]:
        """(image id, stamp) of the deleted records stamped before `before` (all if None);
        a full scan of the records, in slices (call it from a worker thread)."""
        out: list[tuple[str, int]] = []
        after = b""
        while True:
            n = 0
            with self.index.read() as txn:
                cur = txn.cursor(db=self.catalog.images)
                ok = cur.set_range(after) if after else cur.first()
                while ok and n < 4096:
                    key = bytes(cur.key())
                    if key != after:
                        n += 1
                        after = key
                        if decode_image(bytes(cur.value())).status == "deleted":
                            raw = txn.get(key, db=self.stamps)
                            st = 0 if raw is None else _STAMP.unpack(raw)[0]
                            if before is None or st < before:
                                out.append((id_from_key(key), st))
                    ok = cur.next()
            if n == 0:
                return out

    def _forget(self, txn: Any, image_id: str) -> None:
        """Remove every trace of an image record (record, members, stamp)."""
        key = id_key(image_id)
        txn.delete(key, db=self.catalog.images)
        cur = txn.cursor(db=self.catalog.members)
        doomed = []
        ok = cur.set_range(key)
        while ok and bytes(cur.key()[:16]) == key:
            doomed.append(bytes(cur.key()))
            ok = cur.next()
        for k in doomed:
            txn.delete(k, db=self.catalog.members)
        txn.delete(key, db=self.stamps)

    def _raise_horizon(self, txn: Any, stamp: int) -> None:
        if stamp > self._horizon(txn):
            txn.put(_HORIZON, _STAMP.pack(stamp), db=self.meta)

    async def reclaim(self, entries: list[tuple[str, int]]) -> int:
        """Drop the tombstones `entries` (id, stamp) that are still tombstones with that
        stamp; raise the watermark to the highest stamp dropped. Returns how many."""
        cat, store = self.catalog, self.chunks

        def drop(txn: Any) -> int:
            n = 0
            for image_id, stamp in entries:
                rec = cat.load(txn, image_id)
                raw = txn.get(id_key(image_id), db=self.stamps)
                now = 0 if raw is None else _STAMP.unpack(raw)[0]
                if rec is None or rec.status != "deleted" or now != stamp:
                    continue            # changed since it was found: a later round decides
                if store.has_manifest(txn, image_id):
                    store.release(txn, image_id)
                self._forget(txn, image_id)
                self._raise_horizon(txn, stamp)
                n += 1
            return n

        return await cat.run(drop)

    async def raise_horizon(self, stamp: int) -> None:
        """Adopt a peer's watermark after a complete exchange with it (this node then holds
        everything the peer held, which covers every version at or below its watermark)."""
        await self.catalog.run(lambda txn: self._raise_horizon(txn, stamp))

    async def drop_stale(self, entries: list[tuple[str, int]]) -> int:
        """Remove the live versions `entries` (id, stamp) held here that a peer's watermark
        shows to be older than a reclaimed tombstone: the record is deleted (indexes,
        members, quotas, manifests released (other stores' after the commit), nothing
        stamped or pushed) and forgotten.
        Tombstones are left to the reclaimer."""
        cat, store = self.catalog, self.chunks
        stores = getattr(self.engine, "stores", None)
        others: list[tuple[str, str]] = []

        def drop(txn: Any) -> int:
            n = 0
            others.clear()
            for image_id, stamp in entries:
                raw = txn.get(id_key(image_id), db=self.stamps)
                if raw is None or _STAMP.unpack(raw)[0] != stamp:
                    continue
                rec = cat.load(txn, image_id)
                if rec is None or rec.status == "deleted":
                    continue            # a tombstone is dead already: the reclaimer's
                if stores is not None:
                    others.extend((name, image_id) for name in stores.others_of(rec.stores))
                self._applying.on = True
                try:
                    cat.store(txn, rec, rec.evolve(status="deleted", updated_at=time.time()))
                finally:
                    self._applying.on = False
                if store.has_manifest(txn, image_id):
                    store.release(txn, image_id)
                self._forget(txn, image_id)
                n += 1
            return n

        n = await cat.run(drop)
        for name, image_id in others:       # after the record (engine/stores.py)
            await stores.release(name, image_id)
        return n
