# The LMDB index: one environment with named databases, short read transactions, and the
# single writer thread that every write goes through (group commit).
# Invariants:
# - Every database the engine uses is named in DATABASES; nothing opens another.
# - Writes happen only inside Writer jobs: a job is a function `fn(txn) -> result` that may run
#   more than once (a failed batch is retried job by job), so it must not have side effects
#   outside the transaction.
# - Read transactions are short and never held across an `await`.
# - MapFullError grows the map (doubling) and retries; it never reaches a caller.
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgpack
import trio

from tessera.engine.errors import StoreMismatch

T = TypeVar("T")

FORMAT_VERSION = 1

# name -> purpose (keys and values are documented in docs/formats.md)
DATABASES: dict[str, str] = {
    "meta": "format version, chunker identity, node id",
    "chunks": "chunk id -> location, refcount, residency, last verified",
    "segments": "segment number -> committed length, sealed flag, live bytes",
    "unref": "time + chunk id of chunks whose refcount fell to zero (reaper queue)",
    "lru": "last access + chunk id of cache-resident chunks (pruner order)",
    "images": "image id -> image record",
    "manifests": "image id + page number -> extents",
    "members": "image id + member project -> member record",
    "imgidx": "secondary indexes of images for listing (sort keys and filters)",
    "staging": "image id -> staged upload description",
    "tasks": "task id -> task record",
    "imgcache": "image id -> image cache entry (state, size, hits, access times)",
    "stamps": "image id -> hybrid logical clock stamp of its last change (replication)",
    "usage": "project -> per-project totals (images, stored, staged bytes, uploading)",
    "md_namespaces": "metadefs namespace name -> namespace record",
    "md_items": "metadefs namespace id/kind/name -> object, property, tag or association",
    "md_rtypes": "metadefs resource type name -> resource type record",
    "objects": "object-store pack name -> size, live bytes, chunk count (s3 stores)",
    "objchunks": "chunk id -> pack object, offset, length (s3 stores)",
}

MAX_BATCH = 256


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class Index:
    """An open LMDB environment: `read()` for short read transactions, `writer` for writes."""

    def __init__(self, env: lmdb.Environment, dbs: dict[str, Any], path: Path) -> None:
        self.env = env
        self.path = path
        self._dbs = dbs
        self._lock = threading.RLock()       # the gate's lock, taken directly by readers
        self._gate = threading.Condition(self._lock)
        self._readers = 0
        self._resizing = False
        self.writer = Writer(self)

    @classmethod
    def open(cls, path: Path, *, map_size: int, durable: bool = True,
             identity: dict[str, Any] | None = None) -> "Index":
        """Open (creating if needed) the index at `path`.

        `identity` holds meta values that must match what the store was written with (the
        chunker id, the format version): absent ones are written, different ones raise
        StoreMismatch, so a store is never silently reinterpreted.
        """
        path.mkdir(parents=True, exist_ok=True)
        env = lmdb.open(str(path), map_size=map_size, max_dbs=len(DATABASES) + 4,
                        subdir=True, sync=durable, metasync=durable, readahead=False,
                        max_readers=512)
        env.reader_check()  # clear slots left by processes that died holding a read txn
        dbs = {name: env.open_db(name.encode()) for name in DATABASES}
        index = cls(env, dbs, path)
        wanted = {"format_version": FORMAT_VERSION, **(identity or {})}
        with env.begin(write=True) as txn:
            for key, value in wanted.items():
                raw = txn.get(key.encode(), db=dbs["meta"])
                if raw is None:
                    txn.put(key.encode(), pack(value), db=dbs["meta"])
                elif unpack(raw) != value:
                    env.close()
                    raise StoreMismatch(
                        f"data directory {path.parent} was written with {key}={unpack(raw)!r}, "
                        f"this build uses {value!r}; refusing to open it (a chunker change "
                        f"would silently end dedup against existing data)")
        index.writer.start()
        return index

    @classmethod
    def open_reader(cls, path: Path, *, map_size: int) -> "Index":
        """Open an existing index read-only, beside the process that writes it (an API
        worker process, http/workers.py): no writer thread; the map follows the writer's
        growth (MapResizedError on a read adopts the new size and retries)."""
        env = lmdb.open(str(path), map_size=map_size, max_dbs=len(DATABASES) + 4,
                        subdir=True, readonly=True, readahead=False, max_readers=512)
        try:
            dbs = {name: env.open_db(name.encode(), create=False) for name in DATABASES}
        except BaseException:
            env.close()
            raise
        return cls(env, dbs, path)

    def db(self, name: str) -> Any:
        return self._dbs[name]

    def meta(self, key: str) -> Any:
        with self.read() as txn:
            raw = txn.get(key.encode(), db=self._dbs["meta"])
        return None if raw is None else unpack(raw)

    def read(self) -> _Read:
        """A short read transaction (`with index.read() as txn`). Values are copied out
        (buffers=False)."""
        return _Read(self)

    def _leave(self) -> None:
        """A reader is done; the last one out lets a waiting resize proceed."""
        with self._lock:
            self._readers -= 1
            if self._readers == 0 and self._resizing:
                self._gate.notify_all()

    def _grow(self) -> None:
        """Double the map size; called by the writer thread with no write txn open."""
        self._resize(lambda: self.env.info()["map_size"] * 2)

    def _resize(self, size: Callable[[], int]) -> None:
        """set_mapsize(size()) once no read transaction of this process is open (0: the
        size another process grew the map to)."""
        with self._gate:
            self._resizing = True
            while self._readers:
                self._gate.wait()
            try:
                self.env.set_mapsize(size())
            finally:
                self._resizing = False
                self._gate.notify_all()

    def close(self) -> None:
        self.writer.stop()
        self.env.close()


class _Read:
    """Index.read(): a reader counted under the resize gate around one LMDB read
    transaction. A class rather than a generator context manager: a read is on the path of
    every request."""

    __slots__ = ("_index", "_txn")

    def __init__(self, index: Index) -> None:
        self._index = index
        self._txn: Any = None

    def __enter__(self) -> lmdb.Transaction:
        index = self._index
        with index._lock:
            while index._resizing:
                index._gate.wait()
            index._readers += 1
        try:
            self._txn = index.env.begin(buffers=False)
        except lmdb.MapResizedError:      # another process grew the map: adopt its size
            index._leave()
            index._resize(lambda: 0)
            return self.__enter__()
        except BaseException:
            index._leave()
            raise
        return self._txn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._txn.__exit__(exc_type, exc, tb)
        finally:
            self._index._leave()


@dataclass
class _Job:
    fn: Callable[[Any], Any]
    notify: Callable[[], None]
    result: Any = None
    error: BaseException | None = None
    sync_done: threading.Event | None = field(default=None)

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


_STOP = object()


class Writer:
    """The one thread that writes to LMDB. Jobs queued while a transaction commits are
    grouped into the next one (group commit); a failing job does not fail its batch-mates."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.jobs = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tessera-lmdb-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    async def run(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(txn)` in a write transaction; return its result once committed.

        Shielded from cancellation while queued: once submitted, the caller learns whether
        the write committed, so no caller ever wonders if a write happened.
        """
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        job = _Job(fn, lambda: token.run_sync_soon(done.set))
        self._queue.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        return job.outcome()

    def run_blocking(self, fn: Callable[[Any], T]) -> T:
        """The same as `run`, for threads and synchronous tools (fsck, stats)."""
        event = threading.Event()
        job = _Job(fn, event.set)
        self._queue.put(job)
        event.wait()
        return job.outcome()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                batch.append(job)
            self._commit(batch)
            for job in batch:
                job.notify()
            if stop:
                return

    def _commit(self, batch: list[_Job]) -> None:
        env = self._index.env
        while True:
            try:
                txn = env.begin(write=True)
                try:
                    results = [job.fn(txn) for job in batch]
                except BaseException:
                    txn.abort()
                    raise
                txn.commit()
            except lmdb.MapFullError:
                self._index._grow()
                continue
            except BaseException as exc:  # noqa: BLE001 - delivered to the job's caller
                if len(batch) == 1:
                    batch[0].error = exc
                    return
                for job in batch:  # isolate the failing job; the others still commit
                    self._commit([job])
                return
            for job, result in zip(batch, results):
                job.result = result
            self.commits += 1
            self.jobs += len(batch)
            return


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
