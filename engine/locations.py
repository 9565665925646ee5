# Image locations (glance-api.md 1.2, 1.4, 4, 5.8): an image whose bytes live at an external
# HTTP(S) URL, registered with Glance's new locations API (a `location_import` task) or the
# legacy PATCH operations, and the mark an image gets when its origin's content changed.
# Invariants:
# - Registration reads the origin ONCE, through the same path as an upload: the format
#   inspection (engine/formats/gate.py) watches every piece, the engine's ingest cuts, hashes
#   and stores the chunks, and one transaction makes the image active with size, checksum,
#   os_hash_value, virtual_size, the manifest and the location. Until then the image is
#   `importing` and holds the import lock (`os_glance_import_task`), as an import does.
# - The chunks the registration wrote stay in the cache tier (`cache` residency): evictable,
#   and refetched from the origin by a read when evicted (tessera.http.origin, verified
#   against the manifest). Chunks other images already referenced are left as they are.
# - The manifest is the truth, never the origin: a read verifies every chunk it fetches, so
#   a location edited later (OSSN-0065) or an origin that changed cannot alter the bytes an
#   image serves; a changed origin only makes reads of evicted chunks fail. Such an image is
#   marked with the reserved property `os_glance_origin_changed` (users cannot set or remove
#   any `os_glance_*` property), once per image.
# - A failed registration puts the image back to `queued` without the location, the reason
#   in the task's message. Deleting the image never touches the origin (the store is
#   read-only); it drops the manifest's chunk references like any delete.
# - The engine does no network I/O: the origin is read through an opener handed in by the
#   HTTP layer (the filtered, pinned fetch of tessera.http.webdownload).
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from tessera.engine import quotas, states, tasks
from tessera.engine.catalog import check_id
from tessera.engine.errors import Conflict, Forbidden, InvalidInput, TooLarge
from tessera.engine.formats.gate import inspect_stream
from tessera.engine.importer import LOCK, _describe
from tessera.engine.records import ImageRecord

log = logging.getLogger("tessera.locations")

TASK_TYPE = "location_import"
CHANGED = "os_glance_origin_changed"
HASH_ALGOS = ("sha1", "sha256", "sha512", "md5")
DEFAULT_ALGO = "sha512"

Opener = Callable[[], AsyncIterator[Any]]


def check_validation_data(data: object) -> dict[str, str]:
    """Glance's checks of `validation_data` (the add_location schema, then the hex value's
    length for its algorithm); the normalized dict, empty when none was given."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"Provided object does not match schema 'location': {data!r} is "
                           f"not of type 'object'")
    extra = sorted(set(data) - {"os_hash_algo", "os_hash_value"})
    if extra:
        raise InvalidInput(f"Provided object does not match schema 'location': Additional "
                           f"properties are not allowed ({', '.join(map(repr, extra))} "
                           f"{'was' if len(extra) == 1 else 'were'} unexpected)")
    algo, value = data.get("os_hash_algo"), data.get("os_hash_value")
    for name, v in (("os_hash_algo", algo), ("os_hash_value", value)):
        if v is not None and not isinstance(v, str):
            raise InvalidInput(f"Provided object does not match schema 'location': {v!r} is "
                               f"not of type 'string'")
    if (algo is None) != (value is None):
        missing = "os_hash_algo" if algo is None else "os_hash_value"
        present = "os_hash_value" if algo is None else "os_hash_algo"
        raise InvalidInput(f"Provided object does not match schema 'location': "
                           f"'{missing}' is a dependency of '{present}'")
    if algo is None:
        return {}
    if algo not in HASH_ALGOS:
        raise InvalidInput(f"Provided object does not match schema 'location': {algo!r} is "
                           f"not one of {list(HASH_ALGOS)}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidInput(f"os_hash_value ({value}) is not a valid hexadecimal value") \
            from None
    want = hashlib.new(algo).digest_size
    if len(raw) != want:
        raise InvalidInput(f"os_hash_value: ({value}) is not the correct size for ({algo}) "
                           f"(should be ({want}) bytes)")
    return {"os_hash_algo": algo, "os_hash_value": value.lower()}


class Locations:
    def __init__(self, engine: Any) -> None:
        self.cfg = engine.cfg
        self.catalog = engine.catalog
        self.importer = engine.importer
        self.chunks = engine.chunks
        self.stores = engine.stores
        self._submit = engine.background.submit
        self._marked: set[str] = set()

    @property
    def http_store(self) -> str | None:
        """The store id locations are recorded under (the first http store), or None."""
        ids = self.stores.http_ids
        return ids[0] if ids else None

    def of(self, image_id: str) -> tuple[tuple[str, Any], ...]:
        return self.catalog.get(check_id(image_id)).locations

    # -- the new locations API: POST /v2/images/{id}/locations --------------------------------
    async def add(self, image_id: str, url: str, *, validation: dict[str, str],
                  opener: Opener, owner: str | None, user_id: str | None,
                  request_id: str | None, metadata: dict | None = None,
                  more: tuple[tuple[str, dict], ...] = (),
                  wait: bool = False) -> tasks.TaskRecord:
        """Start registering `url` as the location of a queued image; the read runs in the
        background (`run_background`), or before returning with `wait` (the legacy PATCH;
        the finished task is returned). Conflict unless queued and unlocked. `metadata`:
        the location's own (its `store` is always the http store); `more`: further
        (url, metadata) locations listed after it, never read."""
        image_id = check_id(image_id)
        store = self.http_store
        if store is None:
            raise Forbidden("http store must be enabled to use location API by normal user.")
        cat, now, task_id = self.catalog, time.time(), str(uuid.uuid4())
        listed = tuple((u, {**m, "store": store}) for u, m in ((url, metadata or {}), *more))
        self.check_quota(listed)

        def begin(txn: Any) -> tasks.TaskRecord:
            rec = cat.load_live(txn, image_id)
            if rec.status != "queued":
                raise Conflict(f"It's not allowed to add locations if image status is "
                               f"{rec.status}.")
            self.importer._check_lock(txn, rec, now)
            task = tasks.TaskRecord(
                id=task_id, type=TASK_TYPE, status="pending", owner=owner or rec.owner,
                image_id=image_id, request_id=request_id, user_id=user_id,
                input={"image_id": image_id, "loc_url": url, "validation_data": validation},
                created_at=now, updated_at=now)
            tasks.put(txn, self.importer.tasks, task)
            props = dict(rec.properties)
            props[LOCK] = task_id
            cat.store(txn, rec, states.transition(
                rec, "importing", now=now, properties=props, locations=listed))
            return task

        task = await cat.run(begin)
        if not wait:
            self._submit(lambda: self._flow(task, store, opener, validation))
            return task
        await self._flow(task, store, opener, validation)
        with self.catalog.index.read() as txn:
            return tasks.get(txn, self.importer.tasks, task.id)

    def check_quota(self, listed: tuple) -> None:
        """Glance's image_location_quota (negative: unlimited)."""
        quota = self.cfg.image_location_quota
        if 0 <= quota < len(listed):
            raise TooLarge(f"Attempted: {len(listed)}, Maximum: {quota}")

    async def edit(self, image_id: str,
                   change: Callable[[tuple[tuple[str, Any], ...]], tuple]) -> ImageRecord:
        """Replace an active image's locations by change(current) (the legacy PATCH). The
        manifest is untouched: every chunk read from any location is verified against it,
        so no edit can alter the image's bytes (OSSN-0065)."""
        image_id = check_id(image_id)
        cat, store = self.catalog, self.http_store

        def apply(txn: Any) -> ImageRecord:
            cur = cat.load_live(txn, image_id)
            if cur.status != "active":
                raise Conflict(f"It's not allowed to update locations if image status is "
                               f"{cur.status}.")
            listed = tuple((u, {**m, "store": store}) for u, m in change(cur.locations))
            self.check_quota(listed)
            return cat.store(txn, cur, cur.evolve(locations=listed, updated_at=time.time()))

        return await cat.run(apply)

    async def _flow(self, task: tasks.TaskRecord, store: str, opener: Opener,
                    validation: dict[str, str]) -> None:
        image_id, ttl = task.image_id, self.cfg.task_ttl
        assert image_id is not None
        await self.importer._task(task.id, "processing", ttl)
        try:
            rec = await self.register(image_id, opener, validation, store=store,
                                      expect=("importing", task.id))
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._fail(task.id, image_id, exc, ttl)
            if not isinstance(exc, Exception):
                raise
            return
        await self.importer._task(task.id, "success", ttl, result={"image_id": image_id},
                                  message=f"Registered {rec.size} bytes from the location")

    async def register(self, image_id: str, opener: Opener, validation: dict[str, str], *,
                       store: str, expect: tuple[str, str | None],
                       locations: tuple[tuple[str, Any], ...] | None = None) -> ImageRecord:
        """Read the origin once into the cache tier and make the image active. `expect`:
        (status, lock holder) the image must still have when the read is done."""
        cat = self.catalog
        rec = cat.get(image_id)
        algo = validation.get("os_hash_algo", DEFAULT_ALGO)
        extra = None if algo in ("sha512", "md5") else hashlib.new(algo)
        source = opener()
        inspection = inspect_stream(rec.disk_format, rec.container_format)
        try:
            pieces = inspection.watch(source if extra is None else _hashed(source, extra))
            ingested = await self.chunks.ingest(pieces, expected_size=None,
                                                size_cap=self.cfg.image_size_cap)
        finally:
            if hasattr(source, "aclose"):
                await source.aclose()
        try:
            vsize = inspection.finish(ingested.size)
            value = {"sha512": ingested.sha512, "md5": ingested.md5}.get(algo) \
                or (extra.hexdigest() if extra is not None else "")
            for name, actual in (("os_hash_value", value), ("checksum", ingested.md5)):
                wanted = validation.get(name)
                if wanted is not None and wanted != actual:
                    raise InvalidInput(f"{name}: ({wanted}) not matched with actual "
                                       f"{name}: ({actual})")
            cfg, chunks = self.cfg, self.chunks

            def finish(txn: Any) -> ImageRecord:
                cur = cat.load_live(txn, image_id, "Image {id} was deleted during "
                                                   "registration")
                status, holder = expect
                if cur.status != status or cur.properties.get(LOCK) != holder:
                    raise Conflict(f"Image {image_id} changed during the registration of "
                                   f"its location ({cur.status})")
                quotas.enforce(txn, cat.usage, cfg, cur.owner,
                               {"image_size_total": ingested.size})
                fresh = _unclaimed(chunks, txn, ingested.chunk_ids())
                ingested.commit(txn, image_id)
                chunks.mark_cache(txn, fresh)
                props = dict(cur.properties)
                props.pop(LOCK, None)
                props.pop(CHANGED, None)
                return cat.store(txn, cur, states.transition(
                    cur, "active", now=time.time(), size=ingested.size, virtual_size=vsize,
                    checksum=ingested.md5, os_hash_algo=algo, os_hash_value=value,
                    blake3=ingested.blake3, stores=(store,), properties=props,
                    locations=cur.locations if locations is None else locations))

            return await cat.run(finish)
        except BaseException:
            ingested.abandon()
            raise

    async def _fail(self, task_id: str, image_id: str, exc: BaseException,
                    ttl: float) -> None:
        message = _describe(exc)
        log.info("location import %s of image %s failed: %s", task_id, image_id, message)
        cat, now = self.catalog, time.time()

        def revert(txn: Any) -> None:
            cur = cat.load(txn, image_id)
            if cur is None or cur.status != "importing" or cur.properties.get(LOCK) != task_id:
                return
            props = dict(cur.properties)
            props.pop(LOCK, None)
            cat.store(txn, cur, states.transition(cur, "queued", now=now, properties=props,
                                                  locations=(), os_hash_algo=None,
                                                  os_hash_value=None, checksum=None))

        try:
            await cat.run(revert)
        finally:
            await self.importer._task(task_id, "failure", ttl, message=message)

    async def recover(self) -> int:
        """At start-up: registrations a previous run of the node left pending or processing
        died with it; fail them (image back to queued without the location, as a failed
        read). Runs before the importer's recovery, which would keep the location."""
        importer = self.importer
        with self.catalog.index.read() as txn:
            dead = [t for t in tasks.scan(txn, importer.tasks)
                    if t.type == TASK_TYPE and t.status in ("pending", "processing")
                    and t.updated_at < importer._opened_at]
        for t in dead:
            if t.image_id:
                await self._fail(t.id, t.image_id, RuntimeError(
                    "the node stopped during the registration"), self.cfg.task_ttl)
        return len(dead)

    # -- origin changed -----------------------------------------------------------------------
    async def mark_changed(self, image_id: str, detail: str) -> None:
        """Record on the image that its origin no longer serves its bytes (once)."""
        if image_id in self._marked:
            return
        self._marked.add(image_id)
        cat = self.catalog
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        log.warning("image %s: the content at its location changed: %s", image_id, detail)

        def mark(txn: Any) -> None:
            cur = cat.load(txn, image_id)
            if cur is None or cur.status in states.GONE or CHANGED in cur.properties:
                return
            props = dict(cur.properties)
            props[CHANGED] = f"{stamp} {detail}"
            cat.store(txn, cur, cur.evolve(properties=props, updated_at=time.time()))

        await cat.run(mark)


def _unclaimed(chunks: Any, txn: Any, ids: list[bytes]) -> list[bytes]:
    """Those of `ids` no other image holds here (unknown, not held, or unreferenced): the
    registration keeps them in the cache tier, never demoting another image's chunks."""
    out = []
    for cid in ids:
        entry = chunks.db.get(txn, cid)
        if entry is None or not entry.resident or entry.refcount == 0:
            out.append(cid)
    return out


async def _hashed(source: AsyncIterator[Any], hasher: Any) -> AsyncIterator[Any]:
    """`source` passed on, each piece also fed to `hasher` in a worker thread."""
    async for piece in source:
        await trio.to_thread.run_sync(hasher.update, piece)
        yield piece
