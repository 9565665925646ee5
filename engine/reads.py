# Read-only queries of the image catalog: show an image, list images, read members. The
# engine facade has them (Engine derives from ImageReads) and so has an API worker process
# (http/workers.py), which opens the index read-only (Index.open_reader) beside the node's
# one writer process.
# Invariants: nothing here writes or holds a read transaction across an await; every answer
# comes from one committed LMDB snapshot, so a worker sees a change as soon as its writer
# committed it (the writer commits before it answers the request that made the change).
from __future__ import annotations

from typing import Any

from tessera.engine import members
from tessera.engine.catalog import Catalog, check_id
from tessera.engine.config import EngineConfig
from tessera.engine.errors import Forbidden
from tessera.engine.index import Index
from tessera.engine.listing import ListPage, ListQuery, PageCache, list_images
from tessera.engine.records import ImageRecord, MemberRecord


class ImageReads:
    def __init__(self, cfg: EngineConfig, index: Index, stores: Any = None) -> None:
        self.cfg = cfg
        self.index = index
        self.catalog = Catalog(index)
        self.stores = stores
        self._members = index.db("members")
        self._pages = PageCache()

    @property
    def store_ids(self) -> tuple[str, ...]:
        """The named stores, the default first ("default" alone without [[stores]])."""
        return self.stores.ids

    def get_image(self, image_id: str) -> ImageRecord:
        return self.catalog.get(image_id)

    def list_images(self, q: ListQuery) -> ListPage:
        db = self._members
        key = self._pages.key(q)
        with self.index.read() as txn:
            txn_id = txn.id()
            if key is not None:
                page = self._pages.get(key, txn_id)
                if page is not None:
                    return page
            page = list_images(txn, self.catalog.images, self.catalog.idx, q,
                               lambda t, iid, p: members.status_of(t, db, iid, p),
                               self.catalog.cache.decode)
        if key is not None:
            self._pages.put(key, txn_id, page)
        return page

    def list_members(self, image_id: str) -> list[MemberRecord]:
        image_id = check_id(image_id)
        with self.index.read() as txn:
            self._shared_image(txn, image_id)
            return members.list_for(txn, self._members, image_id)

    def get_member(self, image_id: str, member_id: str) -> MemberRecord:
        image_id = check_id(image_id)
        with self.index.read() as txn:
            self._shared_image(txn, image_id)
            member = members.get(txn, self._members, image_id, member_id)
        if member is None:
            raise members.not_found(image_id, member_id)
        return member

    def _shared_image(self, txn: Any, image_id: str) -> ImageRecord:
        rec = self.catalog.load_live(txn, image_id, "Image {id} not found.")
        if rec.visibility != "shared":
            raise Forbidden("Only shared images have members.")
        return rec
