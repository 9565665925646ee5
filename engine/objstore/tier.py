# The object tier of an `s3` store: the store's durable bytes live in pack objects in the
# object store; its local chunk store (segments + index under the store's path) is the
# cache in front of them. This module owns committing an upload (packs durably in the
# object store, then one transaction: manifest + chunk mappings + `cache` residency) and
# deleting objects safely. Reading is engine/objstore/source.py, collection gc.py.
# Invariants:
# - An image's manifest commits only after every pack holding its unmapped chunks was PUT
#   and HEAD-verified (size); the mappings commit in the same transaction as the manifest,
#   so a committed manifest never references a chunk without an object. A failed upload
#   writes nothing to the index: its objects (if any) are garbage for gc.py.
# - After that transaction the store's copies of the image's chunks are `cache`-resident:
#   the pruner may evict them, reads fetch them back (source.py).
# - Object names are content digests. An object is deleted only through `delete_object`,
#   which refuses names an upload of this process is writing, and holds uploads of the same
#   name back until the DELETE finished (so a re-upload of identical bytes never loses its
#   object to a concurrent collection).
from __future__ import annotations

import logging
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import trio

from tessera.engine.chunkdb import ms
from tessera.engine.errors import Conflict, NotFound, TesseraError, Unavailable
from tessera.engine.index import pack, unpack
from tessera.engine.objstore.objdb import Loc, ObjDB
from tessera.engine.objstore.packs import (PackPlan, hash_plan, object_key, plan_span,
                                           segment_path)
from tessera.engine.objstore.source import RangeReader

log = logging.getLogger("tessera.objstore")

MiB = 1024 * 1024
WRITER_KEY = "objstore_writer"          # meta key: this index's writer name (writer_id)
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,80}")


@dataclass(frozen=True)
class TierConfig:
    """How an s3 store lays out and reads its objects (defaults suit tens-of-MiB packs)."""
    store_id: str
    pack_size: int = 32 * MiB          # packs are cut once they pass this size
    repack_below: float = 0.5          # gc rewrites packs whose live share is under this
    read_gap: int = 1 * MiB            # misses closer than this share one ranged GET
    max_read: int = 16 * MiB           # the largest ranged GET
    parallel: int = 4                  # concurrent PUTs of one upload / GETs of one fetch


class ObjectTier:
    def __init__(self, store: Any, client: Any, conf: TierConfig) -> None:
        self.store = store                  # the store's local ChunkStore (the cache tier)
        self.client = client                # engine/objstore/client.py ObjectStore
        self.conf = conf
        self.db = ObjDB(store.index)
        self.writer = writer_id(store)
        self._writing: Counter = Counter()            # object -> uploads writing it
        self._deleting: dict[bytes, trio.Event] = {}  # object -> DELETE in progress
        self.reader = RangeReader(self)               # coalescing ranged GETs
        self.stats = {"uploads": 0, "objects_written": 0, "bytes_written": 0,
                      "objects_deleted": 0, "upload_failures": 0,
                      "copied_in_chunks": 0, "streamed_objects": 0}

    def key(self, obj: bytes) -> str:
        """The key of this index's own pack `obj`."""
        return object_key(self.writer, obj)

    def object_name(self, obj: bytes) -> str:
        """The key to read `obj` at: another writer's pack if its row says so."""
        with self.store.index.read() as txn:
            row = self.db.row(txn, obj)
        return object_key(row.writer if row is not None and row.foreign else self.writer, obj)

    def is_foreign(self, obj: bytes) -> bool:
        with self.store.index.read() as txn:
            row = self.db.row(txn, obj)
        return row is not None and row.foreign

    # -- committing an upload -----------------------------------------------------------------
    async def commit(self, ingested: Any, image_id: str) -> None:
        """Make the packs of `ingested` durable in the object store (those its ingest streamed
        already are), then commit its manifest, the chunk mappings and `cache` residency in
        one transaction. Unavailable if the object store does not take them (nothing is
        then indexed)."""
        store, run = self.store, ingested._run
        streamer = getattr(ingested, "streamer", None)
        streamed = list(streamer.plans) if streamer is not None else []
        cut = dict(streamer.cut) if streamer is not None else {}
        ids = ingested.chunk_ids()
        with store.index.read() as txn:     # chunks in another writer's packs count as
            unmapped = [cid for cid in ids if not self._own(txn, cid)]   # unmapped
        extra = [cid for cid in unmapped if cid not in run.new]
        if extra:       # chunks another upload wrote: copied into this upload's packs
            await trio.to_thread.run_sync(self._append_extra, ingested, extra)
        rest = await trio.to_thread.run_sync(self._plan, run.lease.spans, cut)
        plans = streamed + rest
        for plan in rest:
            self.register(plan.digest)
        try:
            try:
                await self._upload(rest)
            except TesseraError as exc:
                raise self.refused(exc) from exc
            created = ms(time.time())
            placed: dict[bytes, Loc] = {}
            for plan in plans:
                for pc in plan.chunks:
                    placed.setdefault(pc.cid, Loc(plan.digest, pc.offset, pc.length))

            def commit(txn: Any) -> None:
                ingested.commit(txn, image_id)
                for plan in plans:
                    self.db.add_object(txn, plan.digest, plan.size, created)
                for cid in ids:
                    if self._own(txn, cid):
                        continue                   # already durable in another own object
                    loc = placed.get(cid)
                    if loc is None:
                        raise Conflict("a chunk of this upload lost its object while the "
                                       "upload ran; retry")
                    self.db.map(txn, cid, loc)
                store.mark_cache(txn, ids)

            await store.index.writer.run(commit)
        finally:
            for plan in rest:
                self.unregister(plan.digest)
            if streamer is not None:
                streamer.release()
        self.stats["uploads"] += 1

    def _own(self, txn: Any, cid: bytes) -> bool:
        """Is `cid` mapped into one of this index's own objects? (An upload never depends
        on another writer's packs: that writer may delete them once its images are gone.)"""
        loc = self.db.loc(txn, cid)
        row = None if loc is None else self.db.row(txn, loc.obj)
        return row is not None and not row.foreign

    def register(self, obj: bytes) -> None:
        """An upload is writing `obj`: no collection may delete it until unregistered."""
        self._writing[obj] += 1

    def unregister(self, obj: bytes) -> None:
        self._writing[obj] -= 1
        if self._writing[obj] <= 0:
            del self._writing[obj]

    def refused(self, exc: TesseraError) -> Unavailable:
        self.stats["upload_failures"] += 1
        return Unavailable(f"store {self.conf.store_id}: the object store did not take the "
                           f"image's data ({exc.message or type(exc).__name__})")

    def _append_extra(self, ingested: Any, extra: list[bytes]) -> None:
        """Write chunks this upload did not write itself (a concurrent upload wrote them, or
        they were held before without an object) into its lease, so its packs carry them."""
        store, run = self.store, ingested._run
        items = []
        with store.index.read() as txn:
            for cid in extra:
                view = ingested.view(cid)
                if view is None:
                    entry = store.db.get(txn, cid)
                    if entry is None or not entry.resident:
                        raise Unavailable(f"store {self.conf.store_id}: chunk {cid.hex()} is "
                                          f"neither held nor in the object store")
                    view = store.segments.view(entry.segment, entry.offset, entry.length)
                items.append((cid, view))
        self.stats["copied_in_chunks"] += len(items)
        for i in range(0, len(items), 256):
            run.lease.append(items[i:i + 256])
        store.segments.sync(set(run.lease.spans), directory=run.lease.created)

    def _plan(self, spans: dict[int, list[int]], cut: dict[int, int]) -> list[PackPlan]:
        """Packs over what `spans` wrote past `cut` (what the ingest streamed already)."""
        segments = self.store.segments
        plans = []
        for number, (start, end) in sorted(spans.items()):
            at = max(start, cut.get(number, start))
            for plan in plan_span(segments, number, at, end, self.conf.pack_size):
                hash_plan(segments, plan)
                plans.append(plan)
        return plans

    async def _upload(self, plans: list[PackPlan]) -> None:
        limiter = trio.CapacityLimiter(self.conf.parallel)

        async def one(plan: PackPlan) -> None:
            async with limiter:
                await self.put_plan(plan)

        try:
            async with trio.open_nursery() as nursery:
                for plan in plans:
                    nursery.start_soon(one, plan)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    async def put_plan(self, plan: PackPlan) -> None:
        """PUT one pack from its segment and HEAD-verify its size (the caller registered
        its name)."""
        await self._wait_deleted(plan.digest)
        key = self.key(plan.digest)
        path = str(segment_path(self.store.segments, plan.segment))
        await self.client.put_file(key, path, plan.start, plan.size)
        size = await self.client.head(key)
        if size != plan.size:
            raise Unavailable(f"object {key} reads back as {size} bytes, "
                              f"{plan.size} were written")
        self.stats["objects_written"] += 1
        self.stats["bytes_written"] += plan.size

    async def _wait_deleted(self, obj: bytes) -> None:
        while obj in self._deleting:
            await self._deleting[obj].wait()

    # -- lookups ----------------------------------------------------------------------------
    def locate(self, ids: list[bytes]) -> dict[bytes, Loc]:
        with self.store.index.read() as txn:
            out = {}
            for cid in ids:
                loc = self.db.loc(txn, cid)
                if loc is not None:
                    out[cid] = loc
            return out

    # -- deleting objects -------------------------------------------------------------------
    async def delete_object(self, obj: bytes, still_garbage: Any) -> bool:
        """DELETE `obj` if no upload of this process is writing it and `still_garbage(txn)`
        holds in a read transaction taken right now (nothing indexed names it). Returns
        whether it was deleted."""
        if obj in self._writing or obj in self._deleting:
            return False
        with self.store.index.read() as txn:
            if not still_garbage(txn):
                return False
        done = self._deleting[obj] = trio.Event()
        try:
            try:
                await self.client.delete(self.key(obj))
            except NotFound:
                pass
        finally:
            del self._deleting[obj]
            done.set()
        self.stats["objects_deleted"] += 1
        return True

    def close(self) -> None:
        self.client.close()

    def statistics(self) -> dict[str, Any]:
        with self.store.index.read() as txn:
            rows = self.db.rows(txn)
        return {**self.stats, "objects": len(rows),
                "object_bytes": sum(r.size for r in rows.values()),
                "live_bytes": sum(r.live for r in rows.values())}


def writer_id(store: Any) -> str:
    """This store index's name among the writers of its bucket: `<node id>-<random>`, made
    once and kept in the index's meta, so packs of another node (or of an earlier index of
    this node) sharing the bucket and prefix are never taken for this store's garbage."""
    meta = store.index.db("meta")
    current = store.index.meta(WRITER_KEY)
    if current is None:
        name = f"{store.cfg.node_id}-{secrets.token_hex(4)}"
        if not _SAFE.fullmatch(name):
            name = secrets.token_hex(8)

        def put(txn: Any) -> str:
            raw = txn.get(WRITER_KEY.encode(), db=meta)
            if raw is not None:
                return unpack(raw)
            txn.put(WRITER_KEY.encode(), pack(name), db=meta)
            return name

        current = store.index.writer.run_blocking(put)
    return current


def open_tiered(cfg: Any, index: Any, sc: Any) -> Any:
    """The local chunk store of `s3` store `sc` (its cache tier), with its object tier."""
    from tessera.engine.objstore.store import TieredStore

    store = TieredStore.open(cfg, index)
    try:
        attach_tier(store, sc)
    except BaseException:
        store.close()
        raise
    return store


def attach_tier(store: Any, sc: Any) -> ObjectTier:
    """Give the local chunk store of `s3` store `sc` (engine/stores.py StoreConfig) its
    object tier: a client of the store's bucket and prefix (engine/objstore/client.py)."""
    from tessera.engine.objstore.client import ObjectStore, s3_config

    client = ObjectStore(s3_config(sc))
    conf = TierConfig(sc.id)
    if sc.pack_size is not None:
        conf = replace(conf, pack_size=sc.pack_size)
    store.tier = ObjectTier(store, client, conf)
    return store.tier


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first ordinary error inside a task group's error (else the group itself)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = first_error(exc)
        if isinstance(exc, Exception) and not isinstance(exc, BaseExceptionGroup):
            return exc
    return group
