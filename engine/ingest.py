# The ingest pipeline: turns an async source of bytes into durable chunks in segments.
# Invariants:
# - The event loop only copies pieces into a bounded pool of reusable buffers (the bounded
#   trio channel of free buffers is the backpressure to the socket); it never hashes.
# - Three worker threads share each buffer: MD5; SHA-512 + whole-image BLAKE3; and the chunk
#   thread (zero-split, FastCDC, BLAKE3 per chunk, dedup lookup, segment append). The chunk
#   thread carries the undecided tail of one buffer into the headroom of the next.
# - Memory is bounded by the pool: never the whole image. Chunks already indexed, or written
#   by a concurrent ingest, are not written again.
# - On any failure (size mismatch, cap, disk full, source error, cancellation) the run is
#   abandoned before the error propagates: nothing is referenced, new bytes are rolled back
#   or left unreferenced for the reaper.
from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import blake3
import trio

from tessera.engine.chunker import DATA, MAX_CARRY, Chunker
from tessera.engine.chunkid import digest
from tessera.engine.errors import InvalidInput, TooLarge
from tessera.engine.manifest import ExtentLog
from tessera.engine.segments import Lease, Placed

if TYPE_CHECKING:
    from tessera.engine.chunkstore import ChunkStore

FILL = 4 * 1024 * 1024
HEADROOM = (MAX_CARRY + 4095) // 4096 * 4096 + 4096
POOL = 4
_ABORT = object()


class _Buffer:
    __slots__ = ("data", "view", "n", "final", "users", "lock")

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.view = memoryview(data)
        self.n = 0
        self.final = False
        self.users = 0
        self.lock = threading.Lock()


@dataclass
class IngestRun:
    """What one ingest has done so far; owned by the chunk thread until the pipeline ends."""
    lease: Lease
    log: ExtentLog = field(default_factory=ExtentLog)
    new: dict[bytes, Placed] = field(default_factory=dict)        # written by this run
    borrowed: dict[bytes, Placed] = field(default_factory=dict)   # written by a concurrent run
    existing: set[bytes] = field(default_factory=set)             # indexed before this run
    pinned: set[bytes] = field(default_factory=set)
    new_bytes: int = 0
    finished: bool = False
    committed: bool = False
    # observer([(id, bytes)]): called from the chunk thread with each batch of chunks this
    # run wrote (a replication layer streams them to other nodes); may block (backpressure)
    observer: Any = None


@dataclass(frozen=True)
class Digests:
    md5: str
    sha512: str
    blake3: str


async def run_pipeline(store: "ChunkStore", run: IngestRun, source: Any, *,
                       expected_size: int | None, size_cap: int) -> tuple[int, Digests]:
    """Feed `source` through the worker threads; returns (size, digests)."""
    token = trio.lowlevel.current_trio_token()
    free_send, free_recv = trio.open_memory_channel[_Buffer](POOL)
    queues = [queue.SimpleQueue() for _ in range(3)]
    allocated: list[_Buffer] = []
    results: dict[str, Any] = {}

    def done(buf: _Buffer) -> None:
        with buf.lock:
            buf.users -= 1
            last = buf.users == 0
        if last:
            token.run_sync_soon(_give_back, free_send, buf)

    def abort_all() -> None:
        for q in queues:
            q.put(_ABORT)

    def hasher(q: queue.SimpleQueue, names: tuple[str, ...]) -> None:
        hashers = [blake3.blake3(max_threads=1) if n == "blake3" else hashlib.new(n)
                   for n in names]
        try:
            while True:
                buf = q.get()
                if buf is _ABORT:
                    return
                piece = buf.view[HEADROOM:HEADROOM + buf.n]
                for h in hashers:
                    h.update(piece)
                del piece
                final = buf.final
                done(buf)
                if final:
                    break
            for n, h in zip(names, hashers):
                results[n] = h.hexdigest()
        except BaseException:
            abort_all()
            raise

    def chunk_thread(q: queue.SimpleQueue) -> None:
        try:
            _chunk_loop(store, run, q, done)
        except BaseException:
            abort_all()
            raise

    async def get_buffer() -> _Buffer:
        if len(allocated) < POOL:
            try:
                return free_recv.receive_nowait()
            except trio.WouldBlock:
                buf = _Buffer(store._take_buffer(HEADROOM + FILL))
                allocated.append(buf)
                return buf
        return await free_recv.receive()

    def dispatch(buf: _Buffer, n: int, final: bool) -> None:
        buf.n, buf.final, buf.users = n, final, 3
        for q in queues:
            q.put(buf)

    total = 0

    async def feed() -> None:
        nonlocal total
        try:
            buf = await get_buffer()
            n = 0
            async for piece in source:
                mv = piece if isinstance(piece, memoryview) else memoryview(piece)
                if mv.format != "B" or mv.ndim != 1:
                    mv = mv.cast("B")
                total += len(mv)
                if total > size_cap:
                    raise TooLarge(f"image exceeds the size cap of {size_cap} bytes")
                if expected_size is not None and total > expected_size:
                    raise InvalidInput(f"more data than the expected size of {expected_size} bytes")
                while len(mv):
                    k = min(FILL - n, len(mv))
                    buf.view[HEADROOM + n:HEADROOM + n + k] = mv[:k]
                    n += k
                    mv = mv[k:]
                    if n == FILL:
                        dispatch(buf, n, False)
                        buf = await get_buffer()
                        n = 0
                del mv
            if expected_size is not None and total != expected_size:
                raise InvalidInput(f"got {total} bytes, expected {expected_size}")
            dispatch(buf, n, True)
        except BaseException:
            abort_all()
            raise

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, hasher, queues[0], ("md5",))
            nursery.start_soon(trio.to_thread.run_sync, hasher, queues[1], ("sha512", "blake3"))
            nursery.start_soon(trio.to_thread.run_sync, chunk_thread, queues[2])
            nursery.start_soon(feed)
    except BaseExceptionGroup as group:
        _raise_first(group)
    finally:
        free_send.close()
        for buf in allocated:
            store._return_buffer(buf.data)
    return total, Digests(results["md5"], results["sha512"], results["blake3"])


def _raise_first(group: BaseExceptionGroup) -> None:
    """Re-raise the error that stopped the pipeline (the others are its consequences);
    a pure cancellation group is re-raised as it is, for trio's cancel scopes."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    if leaves:
        raise leaves[0]
    raise group


def _give_back(send: Any, buf: _Buffer) -> None:
    try:
        send.send_nowait(buf)
    except (trio.ClosedResourceError, trio.WouldBlock):
        pass


def _chunk_loop(store: "ChunkStore", run: IngestRun, q: queue.SimpleQueue, done: Any) -> None:
    chunker = Chunker()
    prev: _Buffer | None = None
    carry = (0, 0)          # region of `prev` still to be cut
    base = 0
    log = run.log
    while True:
        buf = q.get()
        if buf is _ABORT:
            return
        clen = carry[1] - carry[0]
        lo = HEADROOM - clen
        if prev is not None:
            if clen:
                buf.view[lo:HEADROOM] = prev.view[carry[0]:carry[1]]
            done(prev)
        hi = HEADROOM + buf.n
        cut = chunker.cut(buf.data, lo, hi, base, buf.final)
        views = []
        order: list[tuple[int, Any]] = []
        for kind, start, length in cut.extents:
            if kind == DATA:
                view = buf.view[lo + start:lo + start + length]
                order.append((DATA, len(views)))
                views.append(view)
            else:
                order.append((0, length))
        ids = [digest(v) for v in views]
        _store_chunks(store, run, ids, views)
        for kind, value in order:
            if kind == DATA:
                log.add_data(ids[value], len(views[value]))
            else:
                log.add_zero(value)
        del views
        base += cut.consumed
        carry = (lo + cut.consumed, hi)
        prev = buf
        if buf.final:
            done(buf)
            return


def _store_chunks(store: "ChunkStore", run: IngestRun, ids: list[bytes], views: list) -> None:
    fresh: dict[bytes, memoryview] = {}
    for cid, view in zip(ids, views):
        if cid in run.new or cid in run.borrowed or cid in run.existing or cid in fresh:
            continue
        fresh[cid] = view
    if not fresh:
        return
    claimed, waiting = store._classify(run, list(fresh))
    if claimed:
        items = [(cid, fresh[cid]) for cid in claimed]
        placed = run.lease.append(items)
        for (cid, _), where in zip(items, placed):
            run.new[cid] = where
            run.new_bytes += where.length
        store._register(run, placed, claimed)
        if run.observer is not None:
            run.observer([(cid, bytes(fresh[cid])) for cid in claimed])
    if waiting:
        again = store._await_others(run, waiting)
        if again:
            _store_chunks(store, run, again, [fresh[cid] for cid in again])
