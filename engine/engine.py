# The engine facade (docs/engine-api.md): the only door the HTTP layer, the CLI and
# replication use. It composes the index, the catalog (records + indexes), members, the
# chunk store and the data path.
# Invariants:
# - Every write is one writer job (one LMDB write transaction); status changes are CAS.
# - Knows nothing of HTTP: raises tessera.engine.errors only.
from __future__ import annotations

import time
import uuid
from typing import Any

import trio

from tessera.engine import members, patch, quotas, states, tasks, validation
from tessera.engine.background import Background
from tessera.engine.catalog import check_id
from tessera.engine.chunkstore import ChunkStore, open_index
from tessera.engine.config import EngineConfig
from tessera.engine.datapath import DataPath, Download
from tessera.engine.errors import (BadTransition, Conflict, Forbidden, InvalidInput,
                                   InvalidTransition, NotFound)
from tessera.engine.importer import Importer, Opener
from tessera.engine.index import Index, pack
from tessera.engine.listing import ListPage, ListQuery
from tessera.engine.locations import Locations
from tessera.engine.metadefs import Metadefs
from tessera.engine.patch import PatchOp
from tessera.engine.processes import Processes
from tessera.engine.reads import ImageReads
from tessera.engine.stores import Stores
from tessera.engine.records import ImageRecord, MemberRecord, decode_image, is_uuid

__all__ = ["Engine", "ListQuery", "ListPage", "PatchOp", "Download"]


def _count_usage_once(index: Index) -> None:
    """Count the per-project totals of a store written before they existed (once)."""
    if index.meta(quotas.REBUILT_KEY.decode()) is not None:
        return

    def count(txn: Any) -> None:
        quotas.rebuild(txn, index.db("usage"), index.db("images"))
        txn.put(quotas.REBUILT_KEY, pack(1), db=index.db("meta"))

    index.writer.run_blocking(count)


class Engine(ImageReads):
    def __init__(self, cfg: EngineConfig, index: Index, chunks: ChunkStore,
                 stores: Stores | None = None) -> None:
        super().__init__(cfg, index)      # catalog, members, listing (engine/reads.py)
        self.chunks = chunks
        self.data = DataPath(cfg, self.catalog, chunks)
        self.metadefs = Metadefs(index)   # metadata definitions catalog (engine/metadefs.py)
        self._replica: Any = None
        self.background = Background()    # run by the composition root: `run_background`
        # named stores (engine/stores.py); the default one is `chunks`
        self.stores = stores if stores is not None else Stores(cfg, chunks, (), {})
        self.data.stores = self.stores
        self.importer = Importer(cfg, self.catalog, chunks, self.data, self.background.submit)
        self.importer.stores = self.stores
        self.processes = Processes(self)  # prefetcher, pruner, cleaner, scrubber, reaper
        self.locations = Locations(self)  # images at HTTP locations (engine/locations.py)
        if any(getattr(self.stores.get(n), "tier", None) is not None for n in self.stores.ids):
            # s3 stores: chunks their local cache lacks are read back from their objects
            from tessera.engine.objstore.source import ObjectSource
            self.data.add_chunk_source(ObjectSource(self.stores))

    @classmethod
    async def open(cls, cfg: EngineConfig) -> "Engine":
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        cfg.staging_dir.mkdir(parents=True, exist_ok=True)
        index = open_index(cfg)
        try:
            _count_usage_once(index)
            chunks = ChunkStore.open(cfg, index)
        except BaseException:
            index.close()
            raise
        try:
            stores = Stores.open(cfg, chunks)
        except BaseException:
            chunks.close()
            index.close()
            raise
        return cls(cfg, index, chunks, stores)

    async def aclose(self) -> None:
        with trio.move_on_after(10):        # downloads' cache fills still being kept
            await self.data.filler.settled()
        self.stores.close()
        self.chunks.close()
        self.index.close()

    # -- images ---------------------------------------------------------------------------
    async def create_image(self, fields: dict, *, owner: str | None) -> ImageRecord:
        given = fields.get("id") if isinstance(fields, dict) else None
        # an invalid client id is rejected by new_record, in Glance's order of checks
        image_id = given.lower() if is_uuid(given) else str(uuid.uuid4())
        cfg = self.cfg
        rec = validation.new_record(fields, owner=owner, image_id=image_id, now=time.time(),
                                    property_quota=cfg.image_property_quota,
                                    tag_quota=cfg.image_tag_quota)
        cat = self.catalog

        def create(txn: Any) -> ImageRecord:
            if cat.load(txn, image_id) is not None:
                raise Conflict(f"Image with identifier {image_id} already exists!")
            quotas.enforce(txn, cat.usage, cfg, rec.owner, {"image_count_total": 1})
            return cat.store(txn, None, rec)

        return await cat.run(create)

    async def update_image(self, image_id: str, ops: list[PatchOp], *,
                           is_admin: bool) -> ImageRecord:
        image_id = check_id(image_id)
        cat, cfg, now = self.catalog, self.cfg, time.time()

        def update(txn: Any) -> ImageRecord:
            rec = cat.load_live(txn, image_id)
            new = patch.apply(rec, ops, is_admin=is_admin, now=now,
                              property_quota=cfg.image_property_quota,
                              tag_quota=cfg.image_tag_quota)
            return cat.store(txn, rec, new)

        return await cat.run(update)

    async def delete_image(self, image_id: str) -> None:
        image_id = check_id(image_id)
        cat, data, now, cfg = self.catalog, self.data, time.time(), self.cfg

        released: list[str] = []

        def delete(txn: Any) -> bool:
            rec = cat.load_live(txn, image_id, "Failed to find image {id} to delete")
            released[:] = self.stores.others_of(rec.stores)
            if cfg.delayed_delete and rec.status == "active" and not rec.protected:
                released.clear()        # Glance's delayed delete: the scrubber finishes it
                cat.store(txn, rec, states.transition(rec, "pending_delete", now=now))
                return False
            if rec.protected:
                raise Forbidden(f"Image {image_id} is protected and cannot be deleted.")
            try:
                new = states.transition(rec, "deleted", now=now)
            except InvalidTransition as exc:
                raise BadTransition(exc.message) from None
            staged = data.release(txn, rec)
            cat.store(txn, rec, new)
            return staged or rec.status == "uploading"

        if await cat.run(delete):
            await data.unlink_staged(image_id)
        for name in released:       # after the record commit (engine/stores.py)
            await self.stores.release(name, image_id)

    async def delete_from_store(self, image_id: str, store: str) -> ImageRecord:
        """DELETE /v2/stores/{store}/{image}: drop one store's copy of an active image."""
        image_id = check_id(image_id)
        stores, cat = self.stores, self.catalog
        if not stores.known(store):
            raise Conflict(f"Unknown store {store}")
        name = stores.canonical(store)

        def drop(txn: Any) -> ImageRecord:
            rec = cat.load_live(txn, image_id)
            held = [stores.canonical(s) for s in rec.stores]
            if name not in held:
                raise NotFound(f"Image {image_id} is not present in store {store}")
            if rec.status != "active":
                raise Conflict("It's not allowed to remove image data from store if image "
                               "status is not 'active'")
            if len(held) == 1:
                raise Forbidden("Cannot delete image data from the only store containing "
                                "it. Consider deleting the image instead.")
            if stores.is_main(name):
                self.chunks.release(txn, image_id)
            return cat.store(txn, rec, rec.evolve(
                stores=tuple(s for s in held if s != name), updated_at=time.time()))

        rec = await cat.run(drop)
        if not stores.is_main(name):
            await stores.release(name, image_id)
        return rec

    async def deactivate(self, image_id: str) -> ImageRecord:
        return await self._toggle(image_id, "active", "deactivated", "deactivate")

    async def reactivate(self, image_id: str) -> ImageRecord:
        return await self._toggle(image_id, "deactivated", "active", "reactivate")

    async def _toggle(self, image_id: str, source: str, target: str, verb: str) -> ImageRecord:
        image_id = check_id(image_id)
        cat, now = self.catalog, time.time()

        def toggle(txn: Any) -> ImageRecord:
            rec = cat.load_live(txn, image_id)
            if rec.status == target:
                return rec
            if rec.status != source:
                raise Forbidden(f"Not allowed to {verb} image in status '{rec.status}'")
            return cat.store(txn, rec, states.transition(rec, target, now=now))

        return await cat.run(toggle)

    # -- tags -----------------------------------------------------------------------------
    async def add_tag(self, image_id: str, tag: str) -> ImageRecord:
        image_id = check_id(image_id)
        if not isinstance(tag, str) or len(tag) > 255:
            raise InvalidInput("Provided object does not match schema 'image': tag is too long")
        cat, cfg, now = self.catalog, self.cfg, time.time()

        def add(txn: Any) -> ImageRecord:
            rec = cat.load_live(txn, image_id, "Image {id} not found.")
            if tag in rec.tags:
                return rec
            tags = tuple(sorted((*rec.tags, tag)))
            validation.check_tag_quota(tags, cfg.image_tag_quota)
            return cat.store(txn, rec, rec.evolve(tags=tags, updated_at=now))

        return await cat.run(add)

    async def remove_tag(self, image_id: str, tag: str) -> ImageRecord:
        image_id = check_id(image_id)
        cat, now = self.catalog, time.time()

        def remove(txn: Any) -> ImageRecord:
            rec = cat.load_live(txn, image_id, "Image {id} not found.")
            if tag not in rec.tags:
                raise NotFound(f"Tag {tag} not found on image {image_id}.")
            tags = tuple(t for t in rec.tags if t != tag)
            return cat.store(txn, rec, rec.evolve(tags=tags, updated_at=now))

        return await cat.run(remove)

    # -- members --------------------------------------------------------------------------
    def _touched(self, txn: Any, image_id: str) -> None:
        """A change to an image outside its record (members): tell the catalog's observer."""
        if self.catalog.observer is not None:
            self.catalog.observer(txn, image_id)

    @property
    def replica(self) -> Any:
        """The replica facade (engine/replica.py) a replication layer drives."""
        if self._replica is None:
            from tessera.engine.replica import Replica
            self._replica = Replica(self)
        return self._replica

    async def add_member(self, image_id: str, member_id: str) -> MemberRecord:
        image_id = check_id(image_id)
        cat, db, idx, now = self.catalog, self._members, self.catalog.idx, time.time()
        quota = self.cfg.image_member_quota

        def add(txn: Any) -> MemberRecord:
            rec = self._shared_image(txn, image_id)
            member = members.add(txn, db, idx, rec, member_id, now=now, quota=quota)
            self._touched(txn, image_id)
            return member

        return await cat.run(add)

    async def update_member(self, image_id: str, member_id: str, status: str) -> MemberRecord:
        image_id = check_id(image_id)
        db, now = self._members, time.time()

        def update(txn: Any) -> MemberRecord:
            rec = self._shared_image(txn, image_id)
            member = members.update(txn, db, rec, member_id, status, now=now)
            self._touched(txn, image_id)
            return member

        return await self.catalog.run(update)

    async def delete_member(self, image_id: str, member_id: str) -> None:
        image_id = check_id(image_id)
        db, idx = self._members, self.catalog.idx

        def delete(txn: Any) -> None:
            rec = self._shared_image(txn, image_id)
            members.delete(txn, db, idx, rec, member_id)
            self._touched(txn, image_id)

        await self.catalog.run(delete)

    # -- data -----------------------------------------------------------------------------
    async def upload(self, image_id: str, source: Any, *, expected_size: int | None,
                     store: str | None = None) -> ImageRecord:
        return await self.data.upload(image_id, source, expected_size=expected_size,
                                      store=store)

    async def stage(self, image_id: str, source: Any, *, expected_size: int | None) -> int:
        return await self.data.stage(image_id, source, expected_size=expected_size)

    # -- import and tasks -----------------------------------------------------------------
    async def import_image(self, image_id: str, *, method: str, import_req: dict,
                           stores: tuple[str, ...] = ("default",), owner: str | None = None,
                           user_id: str | None = None, request_id: str | None = None,
                           opener: Opener | None = None,
                           must_succeed: bool = True, task_type: str = "api_image_import",
                           task_input: dict | None = None) -> tasks.TaskRecord:
        """Start an import (engine/importer.py); the flow runs in `run_background`."""
        stores = tuple(self.stores.canonical(s) for s in stores)
        return await self.importer.start(image_id, method=method, import_req=import_req,
                                         stores=stores, owner=owner, user_id=user_id,
                                         request_id=request_id, opener=opener,
                                         must_succeed=must_succeed, task_type=task_type,
                                         task_input=task_input)

    def get_task(self, task_id: str) -> tasks.TaskRecord:
        with self.index.read() as txn:
            return tasks.get(txn, self.index.db("tasks"), task_id)

    def list_tasks(self, image_id: str | None = None) -> list[tasks.TaskRecord]:
        """Task records, newest first; only the image's when `image_id` is given."""
        with self.index.read() as txn:
            found = tasks.scan(txn, self.index.db("tasks"))
        if image_id is not None:
            found = [t for t in found if t.image_id == image_id]
        return sorted(found, key=lambda t: (t.created_at, t.id), reverse=True)

    async def run_background(self, *, task_status: Any = None) -> None:
        """Import flows and the periodic processes; runs until cancelled. Imports a
        previous run of the node left unfinished are failed first (engine/importer.py)."""
        await self.locations.recover()
        await self.importer.recover()
        if task_status is None:
            await self.background.run()
        else:
            await self.background.run(task_status=task_status)

    def open_download(self, image_id: str, start: int = 0,
                      end: int | None = None) -> Download:
        return self.data.open_download(image_id, start, end)

    def usage(self, owner: str | None) -> dict:
        """Glance's /v2/info/usage body for `owner`'s project: {} when no per-project limit
        is configured (as Glance without Keystone limits), else limit and usage of each."""
        if not quotas.any_limit(self.cfg):
            return {}
        with self.index.read() as txn:
            return quotas.report(txn, self.catalog.usage, self.cfg, owner)

    def stats(self) -> dict:
        images = logical = 0
        with self.index.read() as txn:
            for _, raw in txn.cursor(db=self.catalog.images):
                rec = decode_image(raw)
                if rec.status != "deleted":
                    images += 1
                    if rec.stores and rec.size:
                        logical += rec.size
        out = {"images": images, "logical_bytes": logical, "stored_bytes": 0, "chunks": 0,
               "zero_bytes": 0, "cache_bytes": 0}
        for key, value in self.chunks.stats().items():
            if key in out and key not in ("images", "logical_bytes"):
                out[key] = value
        return out
