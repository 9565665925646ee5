# The scrubber (glance-api.md 5.2, Glance's delayed delete): with delayed_delete on, deleting
# an image with data leaves it `pending_delete` with its data; a scrub round turns those older
# than scrub_time into `deleted` and releases their data, a bounded number per round.
# Invariants:
# - The pending_delete -> deleted change and the release of the default store's chunk
#   references are one writer transaction (as a direct delete); other stores' copies are
#   released after it commits (engine/stores.py: a record not listing a store is the truth).
# - A pending_delete image is gone for the API (404, in no listing), as Glance's soft-deleted
#   row; restore() is Glance's `glance-scrubber --restore`: pending_delete -> active, data,
#   listing and member indexes back.
# - Chunks released here become unreferenced; the reaper reclaims them after its grace.
from __future__ import annotations

import time
from typing import Any

from tessera.engine import states
from tessera.engine.catalog import check_id
from tessera.engine.errors import NotFound
from tessera.engine.records import decode_image


class Scrubber:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.runs = 0
        self.scrubbed = 0
        self.restored = 0

    def statistics(self) -> dict[str, Any]:
        return {"runs": self.runs, "scrubbed_images": self.scrubbed,
                "restored_images": self.restored, "pending": len(self.pending())}

    def pending(self, *, older_than: float | None = None) -> list[str]:
        """Ids of pending_delete images (changed before `older_than`, if given)."""
        cat = self.engine.catalog
        out = []
        with cat.index.read() as txn:
            for _, raw in txn.cursor(db=cat.images):
                rec = decode_image(raw)
                if rec.status == "pending_delete" and (
                        older_than is None or rec.updated_at <= older_than):
                    out.append(rec.id)
        return out

    async def run_once(self, *, now: float | None = None, limit: int | None = None) -> int:
        cfg = self.engine.cfg
        now = time.time() if now is None else now
        limit = cfg.scrub_batch if limit is None else limit
        done = 0
        for image_id in self.pending(older_than=now - cfg.scrub_time)[:limit]:
            if await self._scrub(image_id):
                done += 1
        self.runs += 1
        self.scrubbed += done
        return done

    async def _scrub(self, image_id: str) -> bool:
        engine, cat = self.engine, self.engine.catalog
        others: list[str] = []

        def scrub(txn: Any) -> bool:
            rec = cat.load(txn, image_id)
            if rec is None or rec.status != "pending_delete":
                return False
            others[:] = engine.stores.others_of(rec.stores)
            engine.data.release(txn, rec)
            cat.store(txn, rec, states.transition(rec, "deleted", now=time.time()))
            return True

        if not await cat.run(scrub):
            return False
        for name in others:
            await engine.stores.release(name, image_id)
        return True

    async def restore(self, image_id: str) -> None:
        image_id = check_id(image_id)
        cat = self.engine.catalog

        def back(txn: Any) -> None:
            rec = cat.load(txn, image_id)
            if rec is None or rec.status != "pending_delete":
                raise NotFound(f"No pending_delete image with ID {image_id}")
            cat.store(txn, rec, states.transition(rec, "active", now=time.time()))

        await cat.run(back)
        self.restored += 1
