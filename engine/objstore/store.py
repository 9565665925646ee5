# The local chunk store of an `s3` store: a ChunkStore whose ingest also streams the packs
# of the upload to the object store while the bytes arrive (the tier commits the rest and
# the manifest afterwards: engine/objstore/tier.py).
# Invariants:
# - A pack is cut from the ingest's lease only over groups already written (a span's end
#   moves only after a group's write), only once it reached the pack size; the tail is cut
#   by the commit. The streamed packs are PUT and HEAD-verified before the commit uses them.
# - A failed PUT ends the ingest (Unavailable); abandoning the ingest lets go of the
#   streamed packs' names (their objects are garbage for the reaper). Memory: nothing but
#   plans; the PUTs read from the segment files.
from __future__ import annotations

from typing import Any

import trio

from tessera.engine.chunkstore import ChunkStore, Ingested
from tessera.engine.errors import TesseraError
from tessera.engine.ingest import IngestRun, run_pipeline
from tessera.engine.objstore.packs import PackPlan, hash_plan, plan_span

POLL = 0.05        # seconds between looks at the lease's progress


class TieredStore(ChunkStore):
    """The cache tier of an s3 store; `tier` (ObjectTier) is attached when it is opened."""

    tier: Any = None

    async def ingest(self, source: Any, *, expected_size: int | None,
                     size_cap: int, observer: Any = None) -> Ingested:
        if self.tier is None:
            return await super().ingest(source, expected_size=expected_size,
                                        size_cap=size_cap, observer=observer)
        run = IngestRun(self.segments.lease(), observer=observer)
        streamer = PackStreamer(self.tier, run.lease)
        ingested = TieredIngested(self, run, streamer)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(streamer.run)
                size, digests = await run_pipeline(self, run, source,
                                                   expected_size=expected_size,
                                                   size_cap=size_cap)
                await trio.to_thread.run_sync(self._sync_run, run)
                streamer.stop()
        except BaseException as exc:
            ingested.abandon()
            if isinstance(exc, BaseExceptionGroup):
                from tessera.engine.objstore.tier import first_error
                raise first_error(exc) from None
            raise
        ingested._set(size, digests)
        return ingested


class TieredIngested(Ingested):
    def __init__(self, store: TieredStore, run: IngestRun, streamer: "PackStreamer") -> None:
        super().__init__(store, run)
        self.streamer = streamer

    def abandon(self) -> None:
        super().abandon()
        self.streamer.release()


class PackStreamer:
    """Cuts full packs off an ingest's lease while it runs and uploads them."""

    def __init__(self, tier: Any, lease: Any) -> None:
        self.tier = tier
        self.lease = lease
        self.cut: dict[int, int] = {}          # segment -> end of what was cut into packs
        self.plans: list[PackPlan] = []        # cut, uploaded and verified
        self._stopping = False
        self._released = False
        self._names: list[bytes] = []          # registered with the tier as being written

    def stop(self) -> None:
        self._stopping = True

    def release(self) -> None:
        """Let go of the names of the packs (after the commit, or when abandoned)."""
        if self._released:
            return
        self._released = True
        for obj in self._names:
            self.tier.unregister(obj)
        self._names.clear()

    async def run(self) -> None:
        limiter = trio.CapacityLimiter(self.tier.conf.parallel)
        try:
            async with trio.open_nursery() as nursery:
                while not self._stopping:
                    for plan in await trio.to_thread.run_sync(self._ready):
                        self.tier.register(plan.digest)
                        self._names.append(plan.digest)
                        nursery.start_soon(self._put, plan, limiter)
                    await trio.sleep(POLL)
        except TesseraError as exc:
            raise self.tier.refused(exc) from exc
        except BaseExceptionGroup as group:
            from tessera.engine.objstore.tier import first_error
            exc = first_error(group)
            if isinstance(exc, TesseraError):
                raise self.tier.refused(exc) from exc
            raise

    async def _put(self, plan: PackPlan, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            await self.tier.put_plan(plan)
        self.plans.append(plan)
        self.tier.stats["streamed_objects"] += 1

    def _ready(self) -> list[PackPlan]:
        """Full packs over the groups written since the last cut (a worker thread)."""
        segments, target = self.tier.store.segments, self.tier.conf.pack_size
        out = []
        for number, (start, end) in sorted(dict(self.lease.spans).items()):
            at = self.cut.get(number, start)
            if end - at < target:
                continue
            plans = [p for p in plan_span(segments, number, at, end, target)
                     if p.size >= target]
            for plan in plans:
                hash_plan(segments, plan)
                out.append(plan)
            if plans:
                self.cut[number] = plans[-1].end
        return out

