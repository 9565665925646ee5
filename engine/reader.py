# The read path: an image's bytes [start, end) as an async iterator of memoryviews.
# Invariants:
# - Views are zero-copy slices of read-only segment mappings; adjacent chunks of one segment
#   are coalesced into one view (up to VIEW_CAP); zeros come from one shared read-only
#   mapping of zero pages.
# - Every chunk is BLAKE3-verified (whole chunk, even for a partial range) in a worker
#   thread before any of its bytes are yielded; batches are planned inline (short LMDB
#   reads) and up to DEPTH are verified in parallel ahead of the consumer, so the event loop
#   never hashes. A chunk that fails raises CorruptData
#   and none of its bytes are ever yielded.
# - LMDB read transactions are short (one per manifest page and one per batch of lookups).
from __future__ import annotations

import collections
import functools
import mmap
from typing import TYPE_CHECKING, Any

import outcome
import trio

from tessera.engine import manifest
from tessera.engine.chunkdb import CACHE, ChunkEntry
from tessera.engine.chunkid import digest
from tessera.engine.errors import CorruptData, InvalidInput, NotFound, Unavailable
from tessera.engine.segments import SegmentGone

if TYPE_CHECKING:
    from tessera.engine.chunkstore import ChunkStore

BATCH_BYTES = 4 * 1024 * 1024
VIEW_CAP = 4 * 1024 * 1024
ZERO_VIEW_SIZE = 1024 * 1024
DEPTH = 2              # batches verified in parallel ahead of the consumer
_zero_view: memoryview | None = None


def zero_view() -> memoryview:
    """One shared read-only view of zero pages (never written, so it costs no memory)."""
    global _zero_view
    if _zero_view is None:
        _zero_view = memoryview(mmap.mmap(-1, ZERO_VIEW_SIZE, prot=mmap.PROT_READ))
    return _zero_view


class ChunkReader:
    """`async for view in reader` over [start, end) of one image."""

    def __init__(self, store: "ChunkStore", image_id: str, start: int, end: int | None) -> None:
        self._store = store
        self._image = manifest.image_key(image_id)
        self._image_id = image_id
        with store.index.read() as txn:
            head = manifest.read_head(txn, store.db.manifests, self._image)
        if head is None:
            raise NotFound(f"image {image_id} has no data")
        if end is None:
            end = head.size
        if not 0 <= start <= end <= head.size:
            raise InvalidInput(f"range [{start}, {end}) is outside the image (size {head.size})")
        self.size = head.size
        self.start, self.end = start, end
        self._head = head
        self._pos = start                       # next logical offset to prepare
        self._page_no = manifest.page_for(head, start) if head.pages else 0
        self._page: manifest.Page | None = None
        self._idx = 0
        self._ready: list[memoryview] = []
        self._jobs: collections.deque[_Ahead] = collections.deque()
        self._closed = False

    def __aiter__(self) -> "ChunkReader":
        return self

    async def __anext__(self) -> memoryview:
        while not self._ready:
            if self._closed:
                raise StopAsyncIteration
            self._start_jobs()
            if not self._jobs:
                self._closed = True
                raise StopAsyncIteration
            views = await self._jobs.popleft().get()
            self._start_jobs()                  # verify the next batches meanwhile
            views.reverse()
            self._ready = views
        return self._ready.pop()

    def _start_jobs(self) -> None:
        """Plan batches inline (short LMDB reads) and verify up to DEPTH in worker threads."""
        while len(self._jobs) < DEPTH and self._pos < self.end:
            plan = self._plan()
            self._jobs.append(_Ahead(functools.partial(self._materialize, *plan)))

    async def aclose(self) -> None:
        self._closed = True
        self._ready = []
        jobs, self._jobs = self._jobs, collections.deque()
        with trio.CancelScope(shield=True):
            for job in jobs:
                try:
                    await job.get()
                except Exception:
                    pass

    # -- planning (inline) --------------------------------------------------------------
    def _load_page(self) -> manifest.Page:
        if self._page is None:
            with self._store.index.read() as txn:
                page = manifest.read_page(txn, self._store.db.manifests, self._image,
                                          self._page_no)
                if page is None and manifest.read_head(txn, self._store.db.manifests,
                                                       self._image) is None:
                    raise NotFound(f"the data of image {self._image_id} was deleted "
                                   f"during the download")
            if page is None:
                raise CorruptData(f"image {self._image_id}: manifest page {self._page_no} missing")
            self._page = page
            self._idx = page.find(self._pos)
            self._starts = page.starts
        return self._page

    def _plan(self) -> tuple[list, dict[bytes, ChunkEntry], dict[bytes, memoryview]]:
        """The next batch: its extent pieces, their chunk entries and mapped segments."""
        pieces: list[tuple[int, int, bytes | None, int, int]] = []  # (ext start, len, id, lo, hi)
        budget = BATCH_BYTES
        while self._pos < self.end and budget > 0:
            page = self._load_page()
            if self._idx >= len(page.lengths):
                self._page_no += 1
                self._page = None
                continue
            ext_start = self._starts[self._idx]
            length = page.lengths[self._idx]
            lo = max(self._pos, ext_start)
            hi = min(self.end, ext_start + length)
            pieces.append((ext_start, length, page.ids[self._idx], lo, hi))
            self._pos = hi
            budget -= hi - lo
            if hi == ext_start + length:
                self._idx += 1
        ids = list({cid for _, _, cid, _, _ in pieces if cid is not None})
        entries = self._resolve(ids)
        bases = {}
        for cid in ids:                       # map, then ask the kernel to read ahead
            bases[cid] = self._base(cid, entries[cid], entries)
            e = entries[cid]
            self._store.segments.willneed(e.segment, e.offset, e.length)
        return pieces, entries, bases

    # -- worker-thread side ---------------------------------------------------------------
    def _materialize(self, pieces: list, entries: dict, bases: dict) -> list[memoryview]:
        """Verify every chunk of a planned batch and slice its views (worker thread)."""
        store = self._store
        out: list[memoryview] = []
        run_base: memoryview | None = None
        run_seg = run_lo = run_hi = -1
        zero_run = 0
        cached = []

        def flush() -> None:
            nonlocal run_base, zero_run
            if run_base is not None:
                out.append(run_base[run_lo:run_hi])
                run_base = None
            while zero_run:
                n = min(zero_run, ZERO_VIEW_SIZE)
                out.append(zero_view()[:n])
                zero_run -= n

        verified: set[bytes] = set()
        for ext_start, length, cid, lo, hi in pieces:
            if cid is None:
                if run_base is not None:
                    flush()
                zero_run += hi - lo
                continue
            e = entries[cid]
            base = bases[cid]
            if cid not in verified:
                if digest(base[e.offset:e.offset + e.length]) != cid:
                    raise CorruptData(f"chunk {cid.hex()} of image {self._image_id} failed "
                                      f"verification")
                verified.add(cid)
            if e.residency == CACHE:
                cached.append(cid)
            a = e.offset + (lo - ext_start)
            b = e.offset + (hi - ext_start)
            if zero_run:
                flush()
            if run_base is not None and run_seg == e.segment and run_hi == a \
                    and b - run_lo <= VIEW_CAP and len(run_base) >= b:
                run_hi = b
            else:
                flush()
                run_base, run_seg, run_lo, run_hi = base, e.segment, a, b
        flush()
        if cached:
            store.record_access(cached)
        return out

    def _resolve(self, ids: list[bytes]) -> dict[bytes, ChunkEntry]:
        store = self._store
        entries = {}
        with store.index.read() as txn:
            for cid in ids:
                raw = txn.get(cid, db=store.db.chunks)
                if raw is None:
                    raise CorruptData(f"chunk {cid.hex()} of image {self._image_id} is missing")
                entry = ChunkEntry.unpack(raw)
                if not entry.resident:
                    raise Unavailable(f"chunk {cid.hex()} of image {self._image_id} is not "
                                      f"held on this node")
                entries[cid] = entry
        return entries

    def _base(self, cid: bytes, entry: ChunkEntry, entries: dict) -> memoryview:
        for _ in range(3):
            try:
                return self._store.segments.base(entry.segment, entry.offset + entry.length)
            except SegmentGone:  # compacted meanwhile: the index has the new place
                entry = self._resolve([cid])[cid]
                entries[cid] = entry
        raise CorruptData(f"chunk {cid.hex()} keeps moving")


class _Ahead:
    """One job running in a worker thread; its result is awaited later."""

    def __init__(self, fn: Any) -> None:
        self._event = trio.Event()
        self._result: outcome.Outcome | None = None
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome) -> None:
            self._result = result
            try:
                token.run_sync_soon(self._event.set)
            except trio.RunFinishedError:
                pass

        trio.lowlevel.start_thread_soon(fn, deliver)

    async def get(self) -> Any:
        await self._event.wait()
        assert self._result is not None
        return self._result.unwrap()
