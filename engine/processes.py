# The node's periodic processes (DESIGN.md 3.5): cache prefetcher, cache pruner, cache
# cleaner (also stale staging data, orphaned store copies and expired task records),
# scrubber (delayed delete) and reaper, registered on the engine's background runner, each
# with its interval, a rate limit on the work it does, statistics() and a trigger.
# Invariants:
# - Every round is also callable directly (`await processes.run(name)`): the API calls and
#   the CLI triggers use the same code as the periodic loop.
# - Nothing here holds a lock across rounds; each round's writes are writer jobs.
from __future__ import annotations

import os
import time
from typing import Any

from tessera.engine import tasks
from tessera.engine.background import RateLimiter
from tessera.engine.imagecache import ImageCache
from tessera.engine.pruner import Pruner
from tessera.engine.reaper import Reaper
from tessera.engine.records import id_key, is_uuid
from tessera.engine.scrubber import Scrubber

NAMES = ("prefetcher", "cache_pruner", "cache_cleaner", "scrubber", "reaper")


class Processes:
    def __init__(self, engine: Any) -> None:
        cfg = engine.cfg
        self.engine = engine
        self.cache = ImageCache(engine, RateLimiter(cfg.prefetch_rate))
        self.chunk_pruner = Pruner(engine.chunks)
        self.scrubber = Scrubber(engine)
        self.reapers: dict[str, Reaper] = {}
        self.cleaner_stats = {"runs": 0, "staging_files_removed": 0, "store_orphans": 0,
                              "tasks_expired": 0, "cache_entries_removed": 0}
        engine.chunk_pruner = self.chunk_pruner
        bg = engine.background
        bg.add_periodic("prefetcher", cfg.prefetch_interval, self.cache.prefetch_round,
                        lambda: dict(self.cache.stats))
        # s3 stores (engine/objstore): their local copies are a cache under the same budget
        self.store_pruners = {name: Pruner(engine.stores.get(name))
                              for name in engine.stores.ids if _tier(engine, name) is not None}
        bg.add_periodic("cache_pruner", cfg.cache_prune_interval, self.prune,
                        lambda: {**self.chunk_pruner.statistics(),
                                 "pruned_images": self.cache.stats["pruned_images"],
                                 "pruned_bytes": self.cache.stats["pruned_bytes"]})
        bg.add_periodic("cache_cleaner", cfg.cache_clean_interval, self.clean,
                        lambda: dict(self.cleaner_stats))
        bg.add_periodic("scrubber", cfg.scrub_interval, self.scrubber.run_once,
                        self.scrubber.statistics)
        bg.add_periodic("reaper", cfg.reap_interval, self.reap, self.reap_statistics)

    async def run(self, name: str) -> Any:
        """One round of `name` now (the API's and the CLI's trigger)."""
        rounds = {"prefetcher": self.cache.prefetch_round, "cache_pruner": self.prune,
                  "cache_cleaner": self.clean, "scrubber": self.scrubber.run_once,
                  "reaper": self.reap}
        return await rounds[name]()

    async def prune(self) -> Any:
        """The image cache's round (and the main store's chunks), then the s3 stores'."""
        result = await self.cache.prune_round()
        for pruner in self.store_pruners.values():
            await pruner.run_once()
        return result

    # -- the cleaner ------------------------------------------------------------------------
    async def clean(self, *, now: float | None = None) -> dict[str, int]:
        engine = self.engine
        now = time.time() if now is None else now
        out = {"cache_entries_removed": (await self.cache.clean_round(now=now)).images,
               "staging_files_removed": await self._clean_staging(now),
               "store_orphans": await engine.stores.reconcile(engine.catalog),
               "tasks_expired": await self._expire_tasks(now)}
        self.cleaner_stats["runs"] += 1
        for key, value in out.items():
            self.cleaner_stats[key] += value
        return out

    async def _clean_staging(self, now: float) -> int:
        """Staged files no staging record claims and no running import uses (a failed or
        interrupted import, a crash), once older than a minute; and staged images left
        `uploading` past staging_stale (dropped as a delete would drop them)."""
        engine = self.engine
        cat, staging = engine.catalog, engine.data.staging
        removed = 0
        try:
            names = os.listdir(engine.cfg.staging_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            path = engine.cfg.staging_dir / name
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if not is_uuid(name):
                continue
            with cat.index.read() as txn:
                claimed = txn.get(id_key(name), db=staging) is not None
                rec = cat.load(txn, name)
            # an upload still writing (uploading, no record yet) or an import reading or
            # downloading into it keeps its file
            in_use = rec is not None and rec.status in ("uploading", "importing")
            stale = rec is not None and rec.status == "uploading" and \
                age > engine.cfg.staging_stale
            if (not claimed and not in_use and age > 60) or stale:
                if stale:
                    await self._unstage(name)
                await engine.data.unlink_staged(name)
                removed += 1
        return removed

    async def _unstage(self, image_id: str) -> None:
        cat, staging = self.engine.catalog, self.engine.data.staging

        def back(txn: Any) -> None:
            rec = cat.load(txn, image_id)
            txn.delete(id_key(image_id), db=staging)
            if rec is not None and rec.status == "uploading":
                cat.cas(txn, image_id, "uploading", "queued", now=time.time())

        await cat.run(back)

    async def _expire_tasks(self, now: float) -> int:
        db = self.engine.index.db("tasks")
        with self.engine.index.read() as txn:
            gone = tasks.expired(txn, db, now)
        if gone:
            def drop(txn: Any) -> None:
                for task_id in gone:
                    tasks.delete(txn, db, task_id)
            await self.engine.catalog.run(drop)
        return len(gone)

    # -- the reaper -------------------------------------------------------------------------
    async def reap(self, *, grace: float | None = None) -> dict[str, Any]:
        engine = self.engine
        out = {}
        for name in engine.stores.ids:
            store = engine.stores.get(name)
            reaper = self.reapers.get(name)
            if reaper is None:
                tier = _tier(engine, name)
                if tier is not None:            # an s3 store: its objects are collected too
                    from tessera.engine.objstore.gc import TierReaper
                    reaper = self.reapers[name] = TierReaper(store, tier)
                else:
                    reaper = self.reapers[name] = Reaper(store)
            result = await reaper.run_once(grace=grace)
            out[name] = {"dropped_chunks": result.dropped_chunks,
                         "dropped_bytes": result.dropped_bytes,
                         "compacted_segments": result.compacted_segments,
                         "reclaimed_bytes": result.reclaimed_bytes}
            last = getattr(reaper, "last", None)       # an s3 store's object collection
            if last is not None:
                out[name].update({"repacked_objects": last.repacked_objects,
                                  "dead_objects": last.dead_objects,
                                  "orphan_objects": last.orphans,
                                  "aborted_uploads": last.aborted_uploads})
        return out

    def reap_statistics(self) -> dict[str, Any]:
        totals: dict[str, Any] = {}
        for reaper in self.reapers.values():
            for key, value in reaper.statistics().items():
                totals[key] = totals.get(key, 0) + value
        return totals


def _tier(engine: Any, name: str) -> Any:
    """The object tier of store `name` (an s3 store), else None."""
    try:
        return getattr(engine.stores.get(name), "tier", None)
    except Exception:
        return None


def run_offline(cfg: Any, name: str, *, restore: str | None = None,
                grace: float | None = None) -> dict[str, Any]:
    """One round of process `name` on the data directory of `cfg` (the CLI triggers:
    `tessera cache prune|clean`, `tessera scrub`, `tessera reap`); the round's result and
    the process' statistics. Run it while no node serves the directory (a running node has
    the same rounds on its periodic loop and, for the cache, behind /v2/cache/prune|clean)."""
    import trio

    async def main() -> dict[str, Any]:
        from tessera.engine.engine import Engine

        engine = await Engine.open(cfg)
        try:
            procs = engine.processes
            if name == "scrubber" and restore is not None:
                await procs.scrubber.restore(restore)
                result: Any = {"restored": restore}
            elif name == "reaper":
                result = await procs.reap(grace=grace)
            else:
                result = await procs.run(name)
            stats = engine.background.statistics()["periodic"][name]
        finally:
            await engine.aclose()
        if hasattr(result, "__dataclass_fields__"):
            result = dict(result.__dict__)
        return {"process": name, "result": result, "statistics": stats}

    return trio.run(main)
