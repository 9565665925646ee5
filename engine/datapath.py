# Image data through the catalog: upload (queued -> saving -> active), staging
# (queued -> uploading, bytes under staging/<id>), downloads and releasing data on delete.
# Invariants:
# - The CAS queued->saving (or ->uploading) happens before any byte is read, so two uploads
#   to one image cannot both proceed; the loser gets InvalidTransition (409).
# - Chunks become referenced in the same transaction that makes the image active; if the
#   image was deleted meanwhile, the ingest is abandoned and the caller gets Gone.
# - Any failure or cancellation after the first CAS puts the image back to queued (shielded)
#   and re-raises. Nothing ever holds a whole image in memory.
# - Every uploaded piece passes through the format inspection (engine/formats) on its way to
#   the chunk store; a refusal (UnsupportedFormat) comes before the activating transaction,
#   so a refused image stays queued and references nothing. virtual_size is its verdict's.
from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

from tessera.engine import quotas
from tessera.engine.catalog import Catalog, check_id
from tessera.engine.config import EngineConfig
from tessera.engine.chunkfill import Filler
from tessera.engine.errors import Gone, InvalidInput, InvalidTransition, TooLarge
from tessera.engine.fillreader import FillReader
from tessera.engine.formats.gate import inspect_stream
from tessera.engine.index import pack, unpack
from tessera.engine.publish import in_shared_store, publish
from tessera.engine.records import ImageRecord, id_key


def _gone(image_id: str) -> Gone:
    return Gone(f"Image {image_id} could not be found after upload. The image may have been "
                f"deleted during the upload.")


class Download:
    """The bytes [start, end) of an image; `async for view in download` yields memoryviews
    that stay valid until the next iteration. An image without data has record.size None
    and yields nothing. `aclose()` stops a download early (the HTTP server calls it)."""

    def __init__(self, record: ImageRecord, start: int, end: int, total: int | None,
                 reader: Any) -> None:
        self.record = record
        self.start = start
        self.end = end
        self.total = total
        self._reader = reader  # opened by open_download: a vanished manifest fails there
        self.reader = reader   # the engine iterator itself (a ChunkReader also has next_batch)
        self._rest: Any = None      # the reader's iterator once prime() started it
        self._first: Any = None     # the view prime() obtained, yielded first

    def __aiter__(self) -> AsyncIterator[memoryview]:
        if self._reader is None:
            return _empty()
        if self._rest is None:
            return self._reader.__aiter__()
        return self._primed()

    async def prime(self) -> None:
        """Obtain the first bytes now, so that failing to get them (a store unavailable, a
        chunk no source holds) raises here, while the caller can still answer with an error
        status, instead of cutting a body short that already went out as 200."""
        if self._reader is None or self._rest is not None:
            return
        if isinstance(self._reader, FillReader):       # everything held here: the plain path
            local = await self._reader.local_reader()
            if local is not None:
                self._reader = self.reader = local
        self._rest = self._reader.__aiter__()
        try:
            self._first = await self._rest.__anext__()
        except StopAsyncIteration:
            self._first = None

    async def _primed(self) -> AsyncIterator[memoryview]:
        first, self._first = self._first, None
        if first is not None:
            yield first
        async for view in self._rest:
            yield view

    async def aclose(self) -> None:
        if self._reader is not None:
            await self._reader.aclose()


async def _empty() -> AsyncIterator[memoryview]:
    return
    yield  # pragma: no cover


class DataPath:
    def __init__(self, cfg: EngineConfig, catalog: Catalog, chunks: Any) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.chunks = chunks
        self.staging = catalog.index.db("staging")
        self.stores: Any = None    # engine/stores.py Stores, set by the engine
        # Hooks a replication layer installs (None on a single node):
        # upload_session(image_id) -> session: session.observe(items) is called from the
        #   ingest's chunk thread with [(id, bytes)] of each batch of new chunks (it may block:
        #   backpressure); await session.finish(ingested) runs after the bytes are durable
        #   here and before the image becomes active (write quorum; raising fails the
        #   upload); await session.abort() on any failure.
        # publish(image_id): after the activating transaction of an image in an s3 store,
        #   install its document on W nodes (engine/publish.py; raising fails the upload).
        # add_chunk_source(source): where downloads obtain chunks this node does not hold
        #   (engine/chunksource.py; a cluster's peers, an object store, an image's origin).
        self.upload_session: Any = None
        self.publish: Any = None
        self.filler = Filler()

    def add_chunk_source(self, source: Any) -> None:
        """Register a chunk source (engine/chunksource.py); sources are asked in the order
        they were added, each for what the earlier ones could not provide."""
        self.filler.add(source)

    # -- upload ---------------------------------------------------------------------------
    async def upload(self, image_id: str, source: Any, *, expected_size: int | None,
                     store: str | None = None) -> ImageRecord:
        image_id = check_id(image_id)
        # the target store: the main chunk store commits with the record; another named
        # store commits its manifest first (engine/stores.py)
        stores = self.stores
        store_name = "default" if stores is None else stores.canonical(store or stores.default_id)
        chunks = self.chunks if stores is None or stores.is_main(store) else stores.get(store)
        secondary = None

        cat, cfg = self.catalog, self.cfg
        if expected_size is not None and expected_size > cfg.image_size_cap:
            raise TooLarge(f"The incoming image is too large: {expected_size} bytes")

        def start(txn: Any) -> ImageRecord:
            rec = cat.cas(txn, image_id, "queued", "saving", now=time.time())
            # counted as uploading now: over the limit, the whole transaction is dropped
            quotas.enforce(txn, cat.usage, cfg, rec.owner, {
                "image_size_total": expected_size or 0, "image_count_uploading": 0})
            return rec

        saving = await cat.run(start)
        inspection = inspect_stream(saving.disk_format, saving.container_format)
        ingested = None
        before: list[ImageRecord] = []
        # the chunks' write quorum covers the main store only: an s3 store's PUT + HEAD in
        # its bucket is the durable copy, and its document reaches W nodes (publish below)
        session = None if self.upload_session is None or chunks is not self.chunks \
            else self.upload_session(image_id)
        try:
            try:
                extra = {}
                if session is not None:
                    extra["observer"] = session.observe      # chunks stream out as written
                ingested = await chunks.ingest(inspection.watch(source),
                                                    expected_size=expected_size,
                                                    size_cap=self.cfg.image_size_cap, **extra)
            except BaseExceptionGroup as group:
                raise _single(group) from None
            vsize = inspection.finish(ingested.size)   # UnsupportedFormat: nothing commits
            if session is not None:
                await session.finish(ingested)
            done = ingested
            if chunks is not self.chunks:
                await stores.commit(store_name, ingested, image_id)
                secondary = store_name

            def activate(txn: Any) -> ImageRecord | None:
                rec = cat.load(txn, image_id)
                if rec is None or rec.status == "deleted":
                    return None
                if rec.status != "saving":
                    raise InvalidTransition(rec.status, "active")
                quotas.enforce(txn, cat.usage, cfg, rec.owner,
                               {"image_size_total": done.size})
                before[:] = [rec]
                if chunks is self.chunks:
                    done.commit(txn, image_id)
                return cat.store(txn, rec, rec.evolve(
                    status="active", updated_at=time.time(), size=done.size,
                    virtual_size=vsize, checksum=done.md5, os_hash_algo="sha512",
                    os_hash_value=done.sha512, blake3=done.blake3, stores=(store_name,)))

            rec = await cat.run(activate)
            if rec is None:
                ingested.abandon()
                ingested = None
                raise _gone(image_id)
            if secondary is not None and in_shared_store(stores, (secondary,)):
                # Unavailable: back to `saving` here, then to queued as any failure
                await publish(self.publish, cat, before[0], rec)
            return rec
        except BaseException:
            with trio.CancelScope(shield=True):
                if session is not None:
                    await session.abort()
                if ingested is not None:
                    ingested.abandon()
                if secondary is not None:
                    await stores.release(secondary, image_id)
                await self._revert(image_id, "saving")
            raise

    async def _revert(self, image_id: str, from_status: str) -> None:
        cat = self.catalog

        def back(txn: Any) -> None:
            rec = cat.load(txn, image_id)
            if rec is not None and rec.status == from_status:
                cat.cas(txn, image_id, from_status, "queued", now=time.time())

        await cat.run(back)

    # -- staging (glance-direct) ----------------------------------------------------------
    def staging_path(self, image_id: str) -> Any:
        return self.cfg.staging_dir / image_id

    async def stage(self, image_id: str, source: Any, *, expected_size: int | None) -> int:
        image_id = check_id(image_id)
        cat = self.catalog
        if expected_size is not None and expected_size > self.cfg.image_size_cap:
            raise TooLarge(f"The incoming image is too large: {expected_size} bytes")
        cfg = self.cfg

        def start(txn: Any) -> ImageRecord:
            rec = cat.cas(txn, image_id, "queued", "uploading", now=time.time())
            quotas.enforce(txn, cat.usage, cfg, rec.owner, {
                "image_stage_total": expected_size or 0, "image_count_uploading": 0})
            return rec

        await cat.run(start)
        path = self.staging_path(image_id)
        try:
            size = await self._write_staged(path, source, expected_size)

            def record(txn: Any) -> bool:
                rec = cat.load(txn, image_id)
                if rec is None or rec.status != "uploading":
                    return False
                quotas.enforce(txn, cat.usage, cfg, rec.owner, {"image_stage_total": size})
                txn.put(id_key(image_id), pack({"file": image_id, "size": size,
                                                "staged_at": time.time()}), db=self.staging)
                cat.store(txn, rec, rec.evolve(updated_at=time.time(), size=size))
                return True

            if not await cat.run(record):
                raise _gone(image_id)
            return size
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_unlink, path)
                await self._revert(image_id, "uploading")
            raise

    async def _write_staged(self, path: Any, source: Any, expected_size: int | None) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        cap = self.cfg.image_size_cap
        size = 0
        f = await trio.to_thread.run_sync(open, path, "wb")
        try:
            async for piece in source:
                size += len(piece)
                if size > cap:
                    raise TooLarge(f"The incoming image is too large: more than {cap} bytes")
                if expected_size is not None and size > expected_size:
                    raise InvalidInput(f"Image size {expected_size} was announced but more "
                                       f"data arrived")
                await trio.to_thread.run_sync(f.write, piece)
            if expected_size is not None and size != expected_size:
                raise InvalidInput(f"Image size {expected_size} was announced but {size} "
                                   f"bytes arrived")
            if self.cfg.durable:
                await trio.to_thread.run_sync(lambda: (f.flush(), os.fsync(f.fileno())))
        finally:
            await trio.to_thread.run_sync(f.close)
        return size

    def staged(self, txn: Any, image_id: str) -> dict | None:
        raw = txn.get(id_key(image_id), db=self.staging)
        return None if raw is None else unpack(raw)

    # -- delete and download --------------------------------------------------------------
    def release(self, txn: Any, rec: ImageRecord) -> bool:
        """In the delete transaction: drop chunk references and the staging record. Returns
        whether a staged file is left to unlink after commit."""
        if rec.stores and self.chunks is not None:
            self.chunks.release(txn, rec.id)
        return bool(txn.delete(id_key(rec.id), db=self.staging))

    async def unlink_staged(self, image_id: str) -> None:
        await trio.to_thread.run_sync(_unlink, self.staging_path(image_id))

    def open_download(self, image_id: str, start: int = 0, end: int | None = None) -> Download:
        rec = self.catalog.get(image_id)
        if rec.size is None or not rec.stores:
            return Download(rec, 0, 0, None, None)
        stop = rec.size if end is None else end
        if start < 0 or stop > rec.size or start > stop:
            raise InvalidInput(f"Invalid range {start}-{end} for an image of {rec.size} bytes")
        chunks = self.chunks if self.stores is None else \
            (self.stores.holding(rec.stores) or self.chunks)
        if self.filler.sources:
            reader = FillReader(chunks, rec, start, stop, self.filler)
            return Download(rec, start, stop, rec.size, reader)
        return Download(rec, start, stop, rec.size, chunks.read(rec.id, start, stop))


def _single(group: BaseExceptionGroup) -> BaseException:
    """The one ordinary exception inside a task group's error (callers get the engine error
    the contract names, not a group); anything else stays the group."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1 and isinstance(leaves[0], Exception):
        return leaves[0]
    return group


def _unlink(path: Any) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
