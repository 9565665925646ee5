# The cache pruner: keeps `cache`-resident chunks under cfg.cache_budget bytes, evicting the
# least recently used first.
# Invariants:
# - Only resident chunks with `cache` residency are evicted; `store` chunks are never touched
#   (they are not in the lru database at all), nor are chunks pinned by in-flight uploads.
# - Eviction happens in a writer job: an evicted chunk that is still referenced stays in the
#   index as known-but-not-held (segment None) so a later fill can restore it; an
#   unreferenced one is dropped. Its bytes become dead space that compaction reclaims.
# - Reads of cache chunks are recorded in memory (ChunkStore.record_access) and written to
#   the lru at the start of each run.
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tessera.engine.chunkdb import CACHE, split_time_key

if TYPE_CHECKING:
    from tessera.engine.chunkstore import ChunkStore

EVICT_BATCH = 2000


@dataclass
class PruneResult:
    evicted_chunks: int = 0
    evicted_bytes: int = 0
    cache_bytes: int = 0


class Pruner:
    def __init__(self, store: "ChunkStore", budget: int | None = None) -> None:
        self.store = store
        self.budget = store.cfg.cache_budget if budget is None else budget
        self.runs = 0
        self.evicted_bytes = 0

    def statistics(self) -> dict[str, Any]:
        return {"runs": self.runs, "budget": self.budget, "evicted_bytes": self.evicted_bytes}

    async def run_once(self) -> PruneResult:
        store = self.store
        result = PruneResult()
        await store.index.writer.run(store.flush_access)
        while True:
            n, nbytes, cache, more = await store.index.writer.run(self._evict)
            if n:
                store.runs.invalidate()      # remembered download batches may name them
            result.evicted_chunks += n
            result.evicted_bytes += nbytes
            result.cache_bytes = cache
            if not more:
                break
        self.runs += 1
        self.evicted_bytes += result.evicted_bytes
        return result

    def _evict(self, txn: Any) -> tuple[int, int, int, bool]:
        store, db = self.store, self.store.db
        cache = db.cache_bytes(txn)
        if cache <= self.budget:
            return 0, 0, cache, False
        keys = []
        with txn.cursor(db=db.lru) as cur:
            for key, _ in cur:
                keys.append(bytes(key))
                if len(keys) >= EVICT_BATCH:
                    break
        evicted = nbytes = 0
        for key in keys:
            if cache <= self.budget:
                break
            t, cid = split_time_key(key)
            entry = db.get(txn, cid)
            if entry is None or entry.residency != CACHE or not entry.resident \
                    or entry.accessed_at != t:
                txn.delete(key, db=db.lru)                 # stale
                continue
            if store.is_pinned(cid):
                continue
            cache -= entry.length
            evicted += 1
            nbytes += entry.length
            if entry.refcount == 0:
                db.drop(txn, cid, entry)
            else:
                db.uncache(txn, cid, entry)
                db.add_live(txn, entry.segment, -entry.record_bytes)
                entry.segment = None
                entry.offset = entry.header = 0
                db.put(txn, cid, entry)
        more = cache > self.budget and evicted > 0 and len(keys) >= EVICT_BATCH
        return evicted, nbytes, db.cache_bytes(txn), more
