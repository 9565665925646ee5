# The image cache of this node (glance-api.md 1.9, 5.1): which images are cached (their
# chunks resident here, read through and verified) or queued for prefetch, with hits and
# access times; and the three cache processes' rounds: prefetch, prune (LRU under the byte
# budget), clean (invalid entries and stalled fills).
# Invariants:
# - Entries live in the `imgcache` database: image id -> {state, size, hits, last_accessed,
#   last_modified, started}; state is "queued", "filling" or "cached". Changes are writer
#   jobs; hits are counted in memory (a download never waits for a write) and folded into
#   the entries by every round and by list().
# - A fill reads the image through the verified reader (engine/reader.py, or the replication
#   fill reader for chunks held elsewhere, which keeps them in the cache tier); an entry is
#   "cached" only after every byte was read and verified. A fill that dies leaves "filling",
#   which the cleaner removes once older than the stall time.
# - Cache-resident chunks (a cluster's fetched chunks) are evicted by the chunk pruner
#   (engine/pruner.py) under the same budget; on a single node the image's chunks are
#   store-resident and pruning an entry only forgets it.
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tessera.engine.catalog import check_id
from tessera.engine.errors import InvalidInput, NotFound
from tessera.engine.index import pack, unpack
from tessera.engine.records import id_from_key, id_key

TARGETS = ("both", "cache", "queue")


@dataclass
class CacheRoundResult:
    images: int = 0
    bytes: int = 0


class ImageCache:
    def __init__(self, engine: Any, limiter: Any = None) -> None:
        self.engine = engine
        self.db = engine.index.db("imgcache")
        self.limiter = limiter          # background.RateLimiter on prefetch reads (bytes)
        self._hits: dict[str, tuple[int, float]] = {}
        self.stats = {"prefetched_images": 0, "prefetched_bytes": 0, "pruned_images": 0,
                      "pruned_bytes": 0, "cleaned_entries": 0, "hits": 0}

    # -- reads ------------------------------------------------------------------------------
    def _entries(self) -> dict[str, dict]:
        with self.engine.index.read() as txn:
            return {id_from_key(bytes(k)): unpack(v) for k, v in txn.cursor(db=self.db)}

    def listing(self) -> dict:
        """GET /v2/cache's body: cached images (with hits) and queued ids."""
        cached, queued = [], []
        for image_id, e in sorted(self._entries().items(), key=lambda kv: kv[0]):
            if e["state"] == "cached":
                hits, last = self._hits.get(image_id, (0, 0.0))
                cached.append({"image_id": image_id, "hits": e["hits"] + hits,
                               "last_accessed": max(e["last_accessed"], last),
                               "last_modified": e["last_modified"], "size": e["size"]})
            elif e["state"] == "queued":
                queued.append(image_id)
        return {"cached_images": cached, "queued_images": queued}

    def note_read(self, image_id: str) -> None:
        """A full download of an image: a hit if it is cached (counted in memory)."""
        with self.engine.index.read() as txn:
            raw = txn.get(id_key(image_id), db=self.db)
        if raw is None or unpack(raw)["state"] != "cached":
            return
        hits, _ = self._hits.get(image_id, (0, 0.0))
        self._hits[image_id] = (hits + 1, time.time())
        self.stats["hits"] += 1

    # -- API calls --------------------------------------------------------------------------
    async def queue(self, image_id: str) -> None:
        image_id = check_id(image_id)
        rec = self.engine.get_image(image_id)
        if rec.status != "active":
            raise InvalidInput(f"Only images with status active can be targeted for caching, "
                               f"image {image_id} is {rec.status}")
        db = self.db

        def put(txn: Any) -> None:
            if txn.get(id_key(image_id), db=db) is None:
                txn.put(id_key(image_id), pack(_entry("queued")), db=db)

        await self.engine.catalog.run(put)
        self.engine.background.trigger("prefetcher")

    async def delete(self, image_id: str) -> None:
        image_id = check_id(image_id)
        db = self.db

        def drop(txn: Any) -> bool:
            return bool(txn.delete(id_key(image_id), db=db))

        if not await self.engine.catalog.run(drop):
            raise NotFound(f"Image {image_id} is not cached or queued")
        self._hits.pop(image_id, None)

    async def clear(self, target: str) -> int:
        if target not in TARGETS:
            raise InvalidInput(f"If provided 'x-image-cache-clear-target' must be 'cache', "
                               f"'queue' or empty string, got {target}")
        states = {"both": ("cached", "queued", "filling"), "cache": ("cached", "filling"),
                  "queue": ("queued",)}[target]
        db = self.db

        def drop(txn: Any) -> int:
            keys = [bytes(k) for k, v in txn.cursor(db=db) if unpack(v)["state"] in states]
            for k in keys:
                txn.delete(k, db=db)
            return len(keys)

        n = await self.engine.catalog.run(drop)
        if target != "queue":
            self._hits.clear()
        return n

    # -- rounds -----------------------------------------------------------------------------
    async def prefetch_round(self, *, limit: int = 8) -> CacheRoundResult:
        """Fill up to `limit` queued images."""
        result = CacheRoundResult()
        queued = [i for i, e in self._entries().items() if e["state"] == "queued"][:limit]
        for image_id in queued:
            size = await self._fill(image_id)
            if size is not None:
                result.images += 1
                result.bytes += size
        self.stats["prefetched_images"] += result.images
        self.stats["prefetched_bytes"] += result.bytes
        return result

    async def _fill(self, image_id: str) -> int | None:
        db, now = self.db, time.time()

        def start(txn: Any) -> bool:
            raw = txn.get(id_key(image_id), db=db)
            if raw is None or unpack(raw)["state"] != "queued":
                return False
            txn.put(id_key(image_id), pack(_entry("filling", started=now)), db=db)
            return True

        if not await self.engine.catalog.run(start):
            return None
        try:
            download = self.engine.open_download(image_id)
        except NotFound:
            await self.engine.catalog.run(lambda txn: txn.delete(id_key(image_id), db=db))
            return None
        size = 0
        try:
            async for view in download:
                size += len(view)
                if self.limiter is not None:
                    await self.limiter.consume(len(view))
        finally:
            await download.aclose()

        def done(txn: Any) -> None:
            raw = txn.get(id_key(image_id), db=db)
            if raw is not None and unpack(raw)["state"] == "filling":   # not cleared meanwhile
                t = time.time()
                txn.put(id_key(image_id), pack(_entry("cached", size=size, last_accessed=t,
                                                      last_modified=t)), db=db)

        await self.engine.catalog.run(done)
        return size

    async def _flush_hits(self) -> None:
        hits, self._hits = self._hits, {}
        if not hits:
            return
        db = self.db

        def fold(txn: Any) -> None:
            for image_id, (n, last) in hits.items():
                raw = txn.get(id_key(image_id), db=db)
                if raw is None:
                    continue
                e = unpack(raw)
                e["hits"] += n
                e["last_accessed"] = max(e["last_accessed"], last)
                txn.put(id_key(image_id), pack(e), db=db)

        await self.engine.catalog.run(fold)

    async def prune_round(self, budget: int | None = None) -> CacheRoundResult:
        """Forget least recently used cached images until their total is under the budget;
        then the chunk pruner evicts cache-resident chunks under the same budget."""
        budget = self.engine.cfg.cache_budget if budget is None else budget
        await self._flush_hits()
        cached = sorted(((e["last_accessed"], i, e["size"]) for i, e in self._entries().items()
                         if e["state"] == "cached"))
        total = sum(size for _, _, size in cached)
        victims = []
        for _, image_id, size in cached:
            if total <= budget:
                break
            victims.append(image_id)
            total -= size
        db = self.db

        def drop(txn: Any) -> int:
            freed = 0
            for image_id in victims:
                raw = txn.get(id_key(image_id), db=db)
                if raw is not None:
                    freed += unpack(raw)["size"]
                    txn.delete(id_key(image_id), db=db)
            return freed

        freed = await self.engine.catalog.run(drop) if victims else 0
        await self.engine.chunk_pruner.run_once()
        self.stats["pruned_images"] += len(victims)
        self.stats["pruned_bytes"] += freed
        return CacheRoundResult(len(victims), freed)

    async def clean_round(self, *, now: float | None = None) -> CacheRoundResult:
        """Remove stalled fills and entries of images that are gone or no longer active."""
        now = time.time() if now is None else now
        stall = self.engine.cfg.image_cache_stall_time
        invalid = []
        for image_id, e in self._entries().items():
            try:
                rec = self.engine.get_image(image_id)
                alive = rec.status in ("active", "deactivated")
            except NotFound:
                alive = False
            stalled = e["state"] == "filling" and now - e["started"] > stall
            if stalled or not alive:
                invalid.append(image_id)
        db = self.db

        def drop(txn: Any) -> None:
            for image_id in invalid:
                txn.delete(id_key(image_id), db=db)

        if invalid:
            await self.engine.catalog.run(drop)
        self.stats["cleaned_entries"] += len(invalid)
        return CacheRoundResult(len(invalid), 0)


def _entry(state: str, *, size: int = 0, started: float = 0.0, last_accessed: float = 0.0,
           last_modified: float = 0.0) -> dict:
    return {"state": state, "size": size, "hits": 0, "last_accessed": last_accessed,
            "last_modified": last_modified, "started": started}
