# Interoperable image import (glance-api.md 1.6, 5.3): starting an import (preconditions, the
# import lock, the task record, status -> importing, all in one transaction) and the flow that
# runs in the background (bytes -> format inspection -> chunk store -> active).
# Invariants:
# - The lock is the image property `os_glance_import_task` = task id, taken by CAS in the same
#   transaction that creates the task; a second import gets Conflict. A lock whose task is
#   finished or gone, or idle past `lock_stale`, may be taken over (Glance's lock busting).
# - Bytes reach the store only through the same path as an upload: the format inspection
#   (engine/formats/gate.py) watches every piece, the data path's upload_session hook (a
#   cluster's write quorum) sees the main store's chunks and must finish before activation,
#   and the activating transaction commits the chunks; any failure abandons the ingest, so
#   nothing half-written stays referenced. An image landing in an s3 store is then published
#   (its document on W nodes, the data path's publish hook, engine/publish.py); failing that
#   puts the record back and the import fails like any other.
# - A failed import leaves the image as Glance does (`queued`, except copy-image which keeps
#   `active`), the failure in `os_glance_failed_import`, the task `failure` with a message;
#   staged bytes of a failed glance-direct are dropped (the cleaner removes any left behind).
# - The source of a web-download is an opener handed in by the caller (the engine does no
#   network I/O); it raises engine errors (Unavailable, TooLarge, InvalidInput). As in Glance,
#   the download lands in staging first and every target store imports from there.
# - Several target stores are filled one after the other; a secondary store's manifest
#   commits in its own index before the one transaction that lists the stores on the record
#   (engine/stores.py), so a failure releases what was written and lists nothing.
# - Tasks left pending/processing by a previous run of the node are failed at start
#   (recover()), as an interrupted import.
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from tessera.engine import quotas, states, tasks
from tessera.engine.catalog import Catalog, check_id
from tessera.engine.config import EngineConfig, MiB
from tessera.engine.errors import Conflict, Gone, InvalidInput, TesseraError
from tessera.engine.formats.gate import inspect_stream
from tessera.engine.publish import DATA_FIELDS, in_shared_store, publish
from tessera.engine.records import ImageRecord, id_key

log = logging.getLogger("tessera.import")

LOCK = "os_glance_import_task"
IMPORTING = "os_glance_importing_to_stores"
FAILED = "os_glance_failed_import"
STAGE_HOST = "os_glance_stage_host"
METHODS = ("glance-direct", "web-download", "copy-image")
_REQUIRED_STATUS = {"glance-direct": "uploading", "web-download": "queued",
                    "copy-image": "active"}
_STATUS_MESSAGE = {
    "glance-direct": "Image needs to be staged before 'glance-direct' method can be used",
    "web-download": "Image needs to be in 'queued' state to use 'web-download' method",
    "copy-image": "Image needs to be in 'active' state to use 'copy-image' method",
}
PIECE = 1 * MiB

Opener = Callable[[], AsyncIterator[Any]]


class Importer:
    def __init__(self, cfg: EngineConfig, catalog: Catalog, chunks: Any, data: Any,
                 submit: Callable[[Any], None]) -> None:
        self.cfg = cfg
        self.catalog = catalog
        self.chunks = chunks
        self.data = data
        self.tasks = catalog.index.db("tasks")
        self._submit = submit
        self.stores: Any = None     # engine/stores.py Stores, set by the engine
        self._opened_at = time.time()   # tasks older than this belong to a previous run

    # -- starting ---------------------------------------------------------------------------
    async def start(self, image_id: str, *, method: str, import_req: dict,
                    stores: tuple[str, ...], owner: str | None, user_id: str | None,
                    request_id: str | None, opener: Opener | None = None,
                    must_succeed: bool = True, task_type: str = "api_image_import",
                    task_input: dict | None = None) -> tasks.TaskRecord:
        image_id = check_id(image_id)
        if method not in METHODS:
            raise InvalidInput(f"Unknown import method name '{method}'.")
        if method == "web-download" and opener is None:
            raise InvalidInput("web-download needs a URI")
        cat, db, cfg, now = self.catalog, self.tasks, self.cfg, time.time()
        task_id = str(uuid.uuid4())

        def begin(txn: Any) -> tasks.TaskRecord:
            rec = cat.load_live(txn, image_id)
            self._check_lock(txn, rec, now)
            if rec.status != _REQUIRED_STATUS[method]:
                raise Conflict(_STATUS_MESSAGE[method])
            for name in states.missing_formats(rec):
                raise Conflict(f"'{name}' needs to be set before import")
            if method == "copy-image":
                held = [self.stores.canonical(s) for s in rec.stores]
                already = [s for s in stores if s in held]
                if already:
                    raise InvalidInput(f"Image is already present at store "
                                       f"'{','.join(already)}'")
            task = tasks.TaskRecord(
                id=task_id, type=task_type, status="pending", owner=owner or rec.owner,
                image_id=image_id, request_id=request_id, user_id=user_id,
                input=task_input if task_input is not None else {
                    "image_id": image_id, "import_req": import_req,
                    "backend": list(stores)},
                created_at=now, updated_at=now)
            tasks.put(txn, db, task)
            props = dict(rec.properties)
            props.update({LOCK: task_id, IMPORTING: ",".join(stores), FAILED: ""})
            if method == "copy-image":
                new = rec.evolve(properties=props, updated_at=now)
            else:
                new = states.transition(rec, "importing", now=now, properties=props)
            cat.store(txn, rec, new)
            return task

        task = await cat.run(begin)
        self._submit(lambda: self._flow(task, method, stores, opener, cfg.task_ttl,
                                        must_succeed))
        return task

    def _check_lock(self, txn: Any, rec: ImageRecord, now: float) -> None:
        holder = rec.properties.get(LOCK)
        if not holder:
            return
        task = tasks.load(txn, self.tasks, holder)
        if task is None or task.status in ("success", "failure"):
            return
        limit = self.cfg.import_lock_stale * (2 if task.status == "pending" else 1)
        if now - task.updated_at > limit:
            log.warning("busting stale import lock %s on image %s", holder, rec.id)
            return
        raise Conflict(f"Image {rec.id} could not be imported: another import ({holder}) "
                       f"holds the import lock")

    async def recover(self) -> int:
        """At start-up: tasks left pending or processing by a previous run of the node died
        with it. Fail them as an interrupted import fails (image back to queued, lock
        released, staged bytes dropped); returns how many."""
        with self.catalog.index.read() as txn:
            dead = [t for t in tasks.scan(txn, self.tasks)
                    if t.status in ("pending", "processing")
                    and t.updated_at < self._opened_at]
        for t in dead:
            method = ((t.input.get("import_req") or {}).get("method") or {}).get(
                "name", "web-download" if t.type == "import" else "")
            stores = tuple(t.input.get("backend") or ())
            await self._fail(t.id, t.image_id, method, stores,
                             RuntimeError("the node stopped during the import"),
                             self.cfg.task_ttl)
            if method != "copy-image" and t.image_id:
                await self.data.unlink_staged(t.image_id)
        return len(dead)

    # -- the flow ---------------------------------------------------------------------------
    async def _flow(self, task: tasks.TaskRecord, method: str, stores: tuple[str, ...],
                    opener: Opener | None, ttl: float, must_succeed: bool) -> None:
        image_id = task.image_id
        assert image_id is not None
        await self._task(task.id, "processing", ttl)
        failed: list[str] = []
        try:
            if method == "web-download":
                # as Glance: the download lands in staging, each store imports from there
                assert opener is not None
                await self.data._write_staged(self.data.staging_path(image_id), opener(),
                                              None)
            size = await self._import(task.id, image_id, method, stores, must_succeed, failed)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._fail(task.id, image_id, method, stores, exc, ttl)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            if method != "copy-image":
                with trio.CancelScope(shield=True):
                    await self._drop_staged(image_id)
        message = f"Copied {size // MiB} MiB"
        if failed:
            message += f"; failed stores: {','.join(failed)}"
        await self._task(task.id, "success", ttl, result={"image_id": image_id},
                         message=message)

    def _source(self, image_id: str, method: str) -> Any:
        if method == "copy-image":
            return self.data.open_download(image_id)     # verified reads of a held copy
        return self._staged_pieces(image_id)

    async def _staged_pieces(self, image_id: str) -> AsyncIterator[bytes]:
        path = self.data.staging_path(image_id)
        f = await trio.to_thread.run_sync(open, path, "rb")
        try:
            while True:
                piece = await trio.to_thread.run_sync(f.read, PIECE)
                if not piece:
                    return
                yield piece
        finally:
            await trio.to_thread.run_sync(f.close)

    async def _import(self, task_id: str, image_id: str, method: str,
                      targets: tuple[str, ...], must_succeed: bool, failed: list[str]) -> int:
        """Each target store ingests the bytes (serially, as Glance's max_parallel_stores=1);
        one transaction then makes the result visible. A store that fails fails the import
        unless all_stores_must_succeed is false (then it is listed in failed)."""
        cat, stores = self.catalog, self.stores
        rec = cat.get(image_id)
        done: dict[str, Any] = {}          # store -> Ingested (secondary ones committed)
        try:
            for name in targets:
                try:
                    done[name] = await self._to_store(image_id, name, rec,
                                                      self._source(image_id, method))
                except Exception as exc:
                    if must_succeed:
                        raise
                    log.info("import of %s into store %s failed: %s", image_id, name,
                             _describe(exc))
                    failed.append(name)
                    await self._progress(image_id, task_id, name, failed)
                    continue
                await self._progress(image_id, task_id, name, failed)
            if not done:
                raise Conflict(f"Image {image_id} could not be imported into any store")
            first = next(iter(done.values()))
            main = next((ing for n, ing in done.items() if stores.is_main(n)), None)

            committed: list[ImageRecord] = []       # [before, after] the finish

            def finish(txn: Any) -> None:
                statuses = ("active",) if method == "copy-image" else ("importing",)
                cur = self._own(txn, image_id, task_id, statuses)
                committed[:] = [cur]
                if main is not None:
                    main.commit(txn, image_id)
                props = dict(cur.properties)
                props.update({IMPORTING: "", FAILED: ",".join(failed)})
                props.pop(LOCK, None)
                props.pop(STAGE_HOST, None)
                held = tuple(dict.fromkeys((*[stores.canonical(s) for s in cur.stores],
                                            *done)))
                if method == "copy-image":
                    committed.append(cat.store(txn, cur, cur.evolve(
                        stores=held, properties=props, updated_at=time.time())))
                    return
                # the owner's image_size_total (engine/quotas.py), as an upload checks it
                quotas.enforce(txn, cat.usage, self.cfg, cur.owner,
                               {"image_size_total": first.size})
                txn.delete(id_key(image_id), db=self.data.staging)
                committed.append(cat.store(txn, cur, states.transition(
                    cur, "active", now=time.time(), size=first.size,
                    virtual_size=first.virtual_size, checksum=first.md5,
                    os_hash_algo="sha512", os_hash_value=first.sha512, blake3=first.blake3,
                    stores=held, properties=props)))

            await cat.run(finish)
            if in_shared_store(stores, tuple(done)):
                # an s3 store's document on W nodes (engine/publish.py); on Unavailable the
                # record is put back (import lock included) and _fail reverts it as usual
                before, after = committed
                fresh_main = main is not None and not any(stores.is_main(s)
                                                          for s in before.stores)
                await publish(self.data.publish, cat, before, after,
                              fields=(*DATA_FIELDS, "properties"),
                              chunks=self.data.chunks if fresh_main else None)
        except BaseException:
            with trio.CancelScope(shield=True):
                for name, ingested in done.items():
                    ingested.abandon()
                    if not stores.is_main(name):
                        await stores.release(name, image_id)
            raise
        return first.size

    async def _to_store(self, image_id: str, name: str, rec: ImageRecord, source: Any) -> Any:
        """Ingest `source` into store `name` through the format gate; a secondary store's
        manifest is committed, the main store's waits for the finishing transaction."""
        stores = self.stores
        if stores.is_http(name):            # glance_store's StoreAddDisabled: the task fails
            raise Gone("Error in store configuration. Adding images to store is disabled.")
        chunks = stores.get(name)
        inspection = inspect_stream(rec.disk_format, rec.container_format)
        # the main store's chunks take the upload's write-quorum path (a cluster's
        # upload_session hook): streamed to their owners, W copies before activation
        hook = self.data.upload_session if stores.is_main(name) else None
        session = None if hook is None else hook(image_id)
        ingested = None
        try:
            try:
                extra = {} if session is None else {"observer": session.observe}
                ingested = await chunks.ingest(inspection.watch(source), expected_size=None,
                                               size_cap=self.cfg.image_size_cap, **extra)
            finally:
                if hasattr(source, "aclose"):
                    await source.aclose()
            ingested.virtual_size = inspection.finish(ingested.size)
            if session is not None:
                await session.finish(ingested)     # Unavailable: fewer than W copies
            if not stores.is_main(name):
                await stores.commit(name, ingested, image_id)
        except BaseException:
            with trio.CancelScope(shield=True):
                if session is not None:
                    await session.abort()
            if ingested is not None:
                ingested.abandon()
            raise
        return ingested

    async def _progress(self, image_id: str, task_id: str, name: str,
                        failed: list[str]) -> None:
        """os_glance_importing_to_stores shrinks, os_glance_failed_import grows."""
        cat = self.catalog

        def note(txn: Any) -> None:
            cur = cat.load(txn, image_id)
            if cur is None or cur.properties.get(LOCK) != task_id:
                return
            props = dict(cur.properties)
            left = [s for s in (props.get(IMPORTING) or "").split(",") if s and s != name]
            props.update({IMPORTING: ",".join(left), FAILED: ",".join(failed)})
            cat.store(txn, cur, cur.evolve(properties=props, updated_at=time.time()))

        await cat.run(note)

    async def _drop_staged(self, image_id: str) -> None:
        await self.data.unlink_staged(image_id)

    def _own(self, txn: Any, image_id: str, task_id: str,
             statuses: tuple[str, ...]) -> ImageRecord:
        """The image, if it is still ours to change (not deleted, lock still this task's)."""
        cur = self.catalog.load_live(txn, image_id, "Image {id} was deleted during import")
        if cur.properties.get(LOCK) != task_id:
            raise Conflict(f"Image {image_id} lost its import lock to another task")
        if cur.status not in statuses:
            raise Conflict(f"Image {image_id} left status {statuses[0]} during import "
                           f"({cur.status})")
        return cur

    async def _fail(self, task_id: str, image_id: str, method: str, stores: tuple[str, ...],
                    exc: BaseException, ttl: float) -> None:
        message = _describe(exc)
        log.info("import %s of image %s failed: %s", task_id, image_id, message)
        cat, now = self.catalog, time.time()

        def revert(txn: Any) -> None:
            cur = cat.load(txn, image_id)
            if method == "glance-direct":
                txn.delete(id_key(image_id), db=self.data.staging)
            if cur is None or cur.status == "deleted" or cur.properties.get(LOCK) != task_id:
                return
            props = dict(cur.properties)
            props.pop(LOCK, None)
            props[IMPORTING] = ""
            props[FAILED] = ",".join(stores)
            if method == "copy-image" or cur.status != "importing":
                cat.store(txn, cur, cur.evolve(properties=props, updated_at=now))
            else:
                props.pop(STAGE_HOST, None)
                cat.store(txn, cur, states.transition(cur, "queued", now=now,
                                                      properties=props))

        try:
            await cat.run(revert)
        finally:
            await self._task(task_id, "failure", ttl, message=message)

    async def _task(self, task_id: str, status: str, ttl: float, **changes: Any) -> None:
        db = self.tasks

        def move(txn: Any) -> None:
            cur = tasks.get(txn, db, task_id)
            if cur.status in ("success", "failure"):
                return
            tasks.put(txn, db, cur.moved(status, now=time.time(), ttl=ttl, **changes))

        await self.catalog.run(move)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions]
        if len(inner) == 1:
            return _describe(inner[0])
    if isinstance(exc, TesseraError):
        return exc.message or type(exc).__name__
    if isinstance(exc, trio.Cancelled):
        return "The import was interrupted (the node shut down)"
    if isinstance(exc, RuntimeError):
        return f"The import was interrupted: {exc}"
    return f"{type(exc).__name__}: {exc}"
