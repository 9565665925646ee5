# Reading an s3 store's chunks back from its pack objects: the chunk source a download asks
# for chunks its store's cache does not hold (the contract: engine/chunksource.py), and the
# ranged reads the collector uses to repack.
# Invariants:
# - Misses in one object are read with ranged GETs that cover several chunks: the wants of
#   one fetch, and of fetches that arrive within the same moment (the windows a download
#   fills ahead run concurrently), are grouped by object and their ranges merged when the
#   gap between them is under `read_gap`, up to `max_read` per GET.
# - A source never verifies, stores or caches: the engine hashes what it returns and keeps
#   it in the store's cache tier. It returns {} for an image whose data is not in an s3 store.
# - An object that vanished between the lookup and the GET (repacked meanwhile) is looked up
#   again once; an own object still indexed but missing from the object store ends the
#   download with the client's CorruptData (data loss is never reported as a passing
#   outage). Another writer's pack (a cluster peer's) that is missing is not an error here:
#   its writer repacked or deleted it, and the chunks are left to the next chunk sources.
# - Memory: at most 2 x `parallel` ranged GETs in flight for the whole tier, each at most
#   `max_read` long and at least half wanted bytes.
from __future__ import annotations

import logging
from typing import Any

import trio

from tessera.engine.errors import CorruptData, NotFound, Unavailable
from tessera.engine.objstore.objdb import Loc

log = logging.getLogger("tessera.objstore")

JOIN_DELAY = 0.002      # seconds a read waits for concurrent reads of the same object


class _Batch:
    """The reads of one object gathered for a moment, then done as merged ranged GETs."""

    def __init__(self, obj: bytes) -> None:
        self.obj = obj
        self.items: dict[bytes, Loc] = {}
        self.sealed = False
        self.done = trio.Event()
        self.results: dict[bytes, bytes] = {}
        self.gone: BaseException | None = None
        self.error: BaseException | None = None


def merge_ranges(locs: list[tuple[bytes, Loc]], gap: int,
                 max_read: int) -> list[tuple[int, int, list[tuple[bytes, Loc]]]]:
    """(start, end, members) ranges covering `locs` of one object: neighbours within `gap`
    are merged while the range stays at most `max_read` long (unless one chunk is) and at
    least half of it is wanted bytes (gaps never more than double what is read)."""
    out: list[tuple[int, int, list[tuple[bytes, Loc]]]] = []
    useful = 0
    for cid, loc in sorted(locs, key=lambda item: item[1].offset):
        end = loc.offset + loc.length
        if out:
            start, cur_end, members = out[-1]
            new_end = max(end, cur_end)
            if loc.offset - cur_end <= gap and new_end - start <= max_read and \
                    2 * (useful + loc.length) >= new_end - start:
                out[-1] = (start, new_end, members + [(cid, loc)])
                useful += loc.length
                continue
        out.append((loc.offset, end, [(cid, loc)]))
        useful = loc.length
    return out


class RangeReader:
    """Coalescing ranged reads of one tier's objects."""

    def __init__(self, tier: Any) -> None:
        self.tier = tier
        self._open: dict[bytes, _Batch] = {}
        # GETs in flight for all reads of the tier: memory <= this many x max_read
        self._limiter = trio.CapacityLimiter(2 * tier.conf.parallel)
        self.stats = {"gets": 0, "bytes_read": 0, "chunks_read": 0}

    async def read(self, locs: dict[bytes, Loc]
                   ) -> tuple[dict[bytes, bytes], dict[bytes, BaseException]]:
        """Bytes of the chunks at `locs` (unverified) and the objects found missing (with
        the client's error)."""
        by_obj: dict[bytes, dict[bytes, Loc]] = {}
        for cid, loc in locs.items():
            by_obj.setdefault(loc.obj, {})[cid] = loc
        batches = []
        for obj, items in by_obj.items():
            batch = self._open.get(obj)
            if batch is None or batch.sealed:
                batch = self._open[obj] = _Batch(obj)
                trio.lowlevel.spawn_system_task(self._run, batch)
            batch.items.update(items)
            batches.append((batch, items))
        out: dict[bytes, bytes] = {}
        gone: dict[bytes, BaseException] = {}
        for batch, items in batches:
            await batch.done.wait()
            if batch.error is not None:
                raise batch.error
            if batch.gone is not None:
                gone[batch.obj] = batch.gone
            for cid in items:
                data = batch.results.get(cid)
                if data is not None:
                    out[cid] = data
        return out, gone

    async def _run(self, batch: _Batch) -> None:
        try:
            await trio.sleep(JOIN_DELAY)
            batch.sealed = True
            if self._open.get(batch.obj) is batch:
                del self._open[batch.obj]
            conf = self.tier.conf
            ranges = merge_ranges(list(batch.items.items()), conf.read_gap, conf.max_read)
            limiter = self._limiter
            key = self.tier.object_name(batch.obj)

            async def get(start: int, end: int, members: list[tuple[bytes, Loc]]) -> None:
                async with limiter:
                    try:
                        data = await self.tier.client.get_range(key, start, end - start)
                    except (NotFound, CorruptData) as exc:   # missing (or cut short)
                        batch.gone = exc
                        return
                self.stats["gets"] += 1
                self.stats["bytes_read"] += len(data)
                view = memoryview(data)
                for cid, loc in members:
                    a = loc.offset - start
                    if a + loc.length <= len(view):
                        batch.results[cid] = bytes(view[a:a + loc.length])
                        self.stats["chunks_read"] += 1

            async with trio.open_nursery() as nursery:
                for start, end, members in ranges:
                    nursery.start_soon(get, start, end, members)
        except Exception as exc:          # delivered to every reader of the batch
            batch.error = _single(exc)
        except BaseException:
            batch.error = Unavailable("the read from the object store was interrupted")
            raise
        finally:
            batch.done.set()


def _single(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class ObjectSource:
    """The chunk source of s3 stores (engine/chunksource.py)."""

    name = "s3"

    def __init__(self, stores: Any) -> None:
        self.stores = stores
        self.stats = {"fetches": 0, "chunks": 0, "rejected": 0, "relookups": 0}

    def _tier(self, image: Any) -> Any:
        stores = getattr(image, "stores", None)
        if not stores:
            return None
        store = self.stores.holding(tuple(stores))
        return getattr(store, "tier", None)

    async def fetch(self, image: Any, wants: list[Any]) -> dict[bytes, bytes]:
        tier = self._tier(image)
        if tier is None or not wants:
            return {}
        self.stats["fetches"] += 1
        ids = [w.cid for w in wants]
        locs = tier.locate(ids)
        out, gone = await tier.reader.read(locs)
        if gone:           # repacked meanwhile: the mapping moved to another object
            self.stats["relookups"] += 1
            now = tier.locate([c for c in ids if c not in out])
            lost = [loc.obj for loc in now.values() if loc.obj in gone]
            own = [obj for obj in lost if not tier.is_foreign(obj)]
            if own:        # still indexed there: the object store lost it
                raise gone[own[0]]
            # another writer's pack that it repacked or deleted: the next sources (peers)
            # are asked for those chunks; that writer's next document moves the mappings
            now = {c: loc for c, loc in now.items() if loc.obj not in gone}
            if now:
                more, _ = await tier.reader.read(now)
                out.update(more)
        self.stats["chunks"] += len(out)
        return out

    def rejected(self, image: Any, want: Any) -> None:
        self.stats["rejected"] += 1
        tier = self._tier(image)
        loc = None if tier is None else tier.locate([want.cid]).get(want.cid)
        log.warning("chunk %s of image %s read from object %s failed verification",
                    want.cid.hex(), getattr(image, "id", "?"),
                    "?" if loc is None else tier.object_name(loc.obj))
