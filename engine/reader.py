# The read path: an image's bytes [start, end) as an async iterator of memoryviews, or batch
# by batch from a worker thread (`next_batch`, what the HTTP sender uses).
# Invariants:
# - Views are zero-copy slices of read-only segment mappings; adjacent chunks of one segment
#   are coalesced into one view (up to VIEW_CAP); zeros come from one shared read-only
#   mapping of zero pages.
# - A chunk is BLAKE3-verified (whole chunk, even for a partial range) before any of its
#   bytes are handed out, in a worker thread, unless it passed verification less than
#   `trust_verified_for` seconds ago (at ingest, on arrival from a peer or origin, or by an
#   earlier read; 0 = every read verifies); a read that verifies records the time. A chunk
#   that fails raises CorruptData and none of its bytes are ever handed out.
# - `next_batch(files=True)` hands out runs of segment bytes as FileRange (file object,
#   offset, length) for sendfile instead of views of the mapping; a run whose chunks need
#   no verification is then never touched by this process. Such a batch, once every chunk
#   in it is trusted, is remembered in the store's run cache (engine/runcache.py), so the
#   next pull of the same bytes skips the manifest and the index.
# - The event loop does no per-chunk work: the range is cut into fixed logical batches of
#   BATCH_BYTES, and each batch is planned (manifest pages, chunk locations), verified and
#   sliced into views in a worker thread (a chunk straddling two batches is verified by
#   both). The async iterator prepares up to DEPTH batches ahead of its consumer;
#   `next_batch` prepares one in the calling thread (a sender's worker thread, which then
#   sends it: one thread hop per batch, no lock handoffs between threads per chunk).
# - Memory stays bounded: once the consumer moves past a batch, its pages are dropped from
#   this process's mappings (MADV_DONTNEED on a shared file mapping unmaps them; the page
#   cache keeps them), so RSS holds about DEPTH batches per download, not the image
#   (two batches in the `next_batch` form).
# - LMDB read transactions are short (one per manifest page and one per batch of lookups).
from __future__ import annotations

import collections
import functools
import mmap
import os
import threading
import time
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

import outcome
import trio

from tessera.engine import manifest
from tessera.engine.chunkdb import CACHE, ChunkEntry, ms
from tessera.engine.chunkid import digest
from tessera.engine.errors import CorruptData, InvalidInput, NotFound, Unavailable
from tessera.engine.segments import SegmentGone

if TYPE_CHECKING:
    from tessera.engine.chunkstore import ChunkStore

BATCH_BYTES = 4 * 1024 * 1024
VIEW_CAP = 4 * 1024 * 1024
ZERO_VIEW_SIZE = 1024 * 1024
DEPTH = 3              # batches prepared in worker threads ahead of the consumer
PAGES_KEPT = 4         # decoded manifest pages a reader keeps
_PAGE = mmap.PAGESIZE
_WILLNEED = getattr(mmap, "MADV_WILLNEED", None)
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
_zero_view: memoryview | None = None


def zero_view() -> memoryview:
    """One shared read-only view of zero pages (never written, so it costs no memory)."""
    global _zero_view
    if _zero_view is None:
        _zero_view = memoryview(mmap.mmap(-1, ZERO_VIEW_SIZE, prot=mmap.PROT_READ))
    return _zero_view


class FileRange:
    """`length` bytes of an open segment file from `offset` (what sendfile sends). The file
    object stays open while this references it; len() is the byte count, as for a view."""

    __slots__ = ("file", "offset", "length")

    def __init__(self, file: Any, offset: int, length: int) -> None:
        self.file, self.offset, self.length = file, offset, length

    def __len__(self) -> int:
        return self.length

    def tail(self, n: int) -> "FileRange":
        """The range without its first n bytes."""
        return FileRange(self.file, self.offset + n, self.length - n)

    def tobytes(self) -> bytes:
        return os.pread(self.file.fileno(), self.length, self.offset)


IOV_MAX = 512                   # views passed to one writev (the kernel allows 1024)


def write_some(fd: int, pending: list[Any]) -> int:
    """One write of the head of `pending` (views and FileRanges) to the socket `fd`:
    sendfile for a file range, else writev of the views up to the next file range (at most
    IOV_MAX); the number of bytes written (HTTP downloads and peers' raw chunk replies)."""
    head = pending[0]
    if isinstance(head, FileRange):
        n = os.sendfile(fd, head.file.fileno(), head.offset, head.length)
        if n == 0:                       # the file ends early: never spin on it
            raise OSError(f"segment file ended before {head.length} bytes at {head.offset}")
        return n
    k = 1
    while k < len(pending) and k < IOV_MAX and not isinstance(pending[k], FileRange):
        k += 1
    return os.writev(fd, pending[:k])


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
        self._next = start                      # logical offset of the next batch to start
        self._pages: collections.OrderedDict[int, tuple[manifest.Page, list[int]]] = \
            collections.OrderedDict()
        self._pages_lock = threading.Lock()
        self._ready: list[memoryview] = []
        self._spans: list[tuple[Any, int, int]] = []   # mapped ranges of the current batch
        self._to_drop: list[tuple[Any, int, int]] = []  # consumed: to drop from the process
        self._jobs: collections.deque[_Ahead] = collections.deque()
        self._held: collections.deque[list[tuple[Any, int, int]]] = collections.deque()
        self._closed = False

    def __aiter__(self) -> "ChunkReader":
        return self

    async def __anext__(self) -> memoryview:
        while not self._ready:
            if self._closed:
                raise StopAsyncIteration
            self._release()
            self._start_jobs()
            if not self._jobs:
                self._closed = True
                _drop(self._to_drop)
                self._to_drop = []
                raise StopAsyncIteration
            views, spans = await self._jobs.popleft().get()
            self._start_jobs()                  # prepare the next batches meanwhile
            views.reverse()
            self._ready = views
            self._spans = spans
        return self._ready.pop()

    def next_batch(self, files: bool = False) -> list[memoryview | FileRange]:
        """The verified views of the next batch ([] at the end), prepared in the calling
        worker thread (one thread at a time); with `files`, segment runs come as
        FileRange. The views of one call stay valid through the
        next call (a sender may prepare a batch while the previous one is in flight) and are
        released by the call after. After async iteration started (a primed download) it
        goes on from there: the views not yet yielded, then the batches being prepared."""
        if self._ready:
            views, self._ready = self._ready, []
            views.reverse()
            return views
        if self._spans:
            self._held.append(self._spans)
            self._spans = []
        while len(self._held) >= 2:
            _drop(self._held.popleft())
        if self._jobs:
            views, spans = self._jobs.popleft().wait()
        elif self._closed or self._next >= self.end:
            return []
        else:
            drop, self._to_drop = self._to_drop, []
            views, spans = self._batch(*self._cut(), drop, files)
        self._held.append(spans)
        return views

    def _cut(self) -> tuple[int, int]:
        lo = self._next
        hi = min(self.end, (lo // BATCH_BYTES + 1) * BATCH_BYTES)
        self._next = hi
        return lo, hi

    def _start_jobs(self) -> None:
        while len(self._jobs) < DEPTH and self._next < self.end:
            lo, hi = self._cut()
            drop, self._to_drop = self._to_drop, []
            self._jobs.append(_Ahead(functools.partial(self._batch, lo, hi, drop)))

    def _release(self) -> None:
        """Hand the pages of the batch the consumer has moved past to the next job, which
        drops them from this process in its worker thread."""
        self._to_drop.extend(self._spans)
        self._spans = []

    async def aclose(self) -> None:
        self._closed = True
        self._ready = []
        self._release()
        while self._held:
            self._to_drop.extend(self._held.popleft())
        jobs, self._jobs = self._jobs, collections.deque()
        with trio.CancelScope(shield=True):
            for job in jobs:
                try:
                    _, spans = await job.get()
                except Exception:
                    continue
                self._to_drop.extend(spans)
        _drop(self._to_drop)
        self._to_drop = []

    # -- worker-thread side ---------------------------------------------------------------
    def _page(self, page_no: int) -> tuple[manifest.Page, list[int]]:
        with self._pages_lock:
            cached = self._pages.get(page_no)
            if cached is not None:
                return cached
        with self._store.index.read() as txn:
            page = manifest.read_page(txn, self._store.db.manifests, self._image, page_no)
            if page is None and manifest.read_head(txn, self._store.db.manifests,
                                                   self._image) is None:
                raise NotFound(f"the data of image {self._image_id} was deleted "
                               f"during the download")
        if page is None:
            raise CorruptData(f"image {self._image_id}: manifest page {page_no} missing")
        entry = (page, page.starts)
        with self._pages_lock:
            self._pages[page_no] = entry
            while len(self._pages) > PAGES_KEPT:
                self._pages.popitem(last=False)
        return entry

    def _pieces(self, lo: int, hi: int) -> list[tuple[int, int, bytes | None, int, int]]:
        """The extents covering [lo, hi): (extent start, length, id, piece lo, piece hi)."""
        pieces = []
        head = self._head
        page_no = manifest.page_for(head, lo) if head.pages else 0
        page, starts = self._page(page_no)
        idx = max(0, bisect_right(starts, lo) - 1)
        pos = lo
        while pos < hi:
            if idx >= len(page.lengths):
                page_no += 1
                page, starts = self._page(page_no)
                idx = 0
                continue
            ext_start = starts[idx]
            length = page.lengths[idx]
            a = max(pos, ext_start)
            b = min(hi, ext_start + length)
            pieces.append((ext_start, length, page.ids[idx], a, b))
            pos = b
            idx += 1
        return pieces

    def _batch(self, lo: int, hi: int, drop: list[tuple[Any, int, int]], files: bool = False
               ) -> tuple[list[Any], list[tuple[Any, int, int]]]:
        """Drop the consumed ranges, then plan, read ahead, verify and slice the views (or
        file ranges) of [lo, hi) (worker thread)."""
        _drop(drop)
        store = self._store
        trust = store.cfg.trust_verified_for
        now = ms(time.time())
        trusted_since = now - int(trust * 1000) if trust > 0 else None
        remember = files and trusted_since is not None
        if remember:
            head = self._head
            key = (self._image, head.size, head.extents, head.zero, lo, hi)
            generation = store.runs.generation
            hit = self._remembered(key, now)
            if hit is not None:
                return hit, []
        pieces = self._pieces(lo, hi)
        ids = list({cid for _, _, cid, _, _ in pieces if cid is not None})
        entries = self._resolve(ids)
        bases = self._bases(entries)
        stale = {cid: e for cid, e in entries.items()
                 if trusted_since is None or e.verified_at < trusted_since}
        # Sendfile reads ahead by itself; only what this process touches is read ahead here
        # (and dropped from its mappings later).
        self._read_ahead(stale if files else entries, bases)
        out: list[Any] = []
        spans: list[tuple[Any, int, int]] = []
        reverified: list[bytes] = []
        runs: list[Any] = []                     # what the run cache keeps of this batch
        run_base: memoryview | None = None
        run_seg = run_lo = run_hi = -1
        zero_run = 0
        cached = []

        def flush() -> None:
            nonlocal run_base, zero_run
            if run_base is not None:
                if files:
                    out.append(FileRange(store.segments.file(run_seg, run_hi),
                                         run_lo, run_hi - run_lo))
                    runs.append((run_seg, run_lo, run_hi - run_lo))
                else:
                    out.append(run_base[run_lo:run_hi])
                    spans.append((run_base.obj, run_lo, run_hi))
                run_base = None
            if zero_run:
                runs.append(zero_run)
            while zero_run:
                n = min(zero_run, ZERO_VIEW_SIZE)
                out.append(zero_view()[:n])
                zero_run -= n

        verified: set[bytes] = set()
        for ext_start, length, cid, a, b in pieces:
            if cid is None:
                if run_base is not None:
                    flush()
                zero_run += b - a
                continue
            e = entries[cid]
            base = bases[e.segment]
            if cid in stale and cid not in verified:
                if digest(base[e.offset:e.offset + e.length]) != cid:
                    raise CorruptData(f"chunk {cid.hex()} of image {self._image_id} "
                                      f"failed verification")
                reverified.append(cid)
                verified.add(cid)
                if files:                        # hashing mapped its pages: drop them later
                    spans.append((base.obj, e.offset, e.offset + e.length))
            if e.residency == CACHE:
                cached.append(cid)
            a = e.offset + (a - ext_start)
            b = e.offset + (b - ext_start)
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
        if reverified:
            store.record_verified(reverified)
        if remember:
            oldest = min([e.verified_at for cid, e in entries.items() if cid not in stale],
                         default=now)
            store.runs.put(key, tuple(runs), tuple(cached), min(oldest, now) + int(trust * 1000),
                           generation)
        return out, spans

    def _remembered(self, key: Any, now: int) -> list[Any] | None:
        """A batch's items from the run cache, or None (not there, expired, or a segment of
        it was removed since)."""
        store = self._store
        hit = store.runs.get(key, now)
        if hit is None:
            return None
        runs, cached = hit
        out: list[Any] = []
        for run in runs:
            if isinstance(run, int):
                while run:
                    n = min(run, ZERO_VIEW_SIZE)
                    out.append(zero_view()[:n])
                    run -= n
                continue
            seg, offset, length = run
            try:
                out.append(FileRange(store.segments.file(seg, offset + length), offset, length))
            except SegmentGone:
                return None
        if cached:
            store.record_access(list(cached))
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

    def _bases(self, entries: dict[bytes, ChunkEntry]) -> dict[int, memoryview]:
        """One mapping per segment the batch reads (entries of chunks whose segment was
        compacted meanwhile are looked up again: the index has their new place)."""
        for _ in range(3):
            ends: dict[int, int] = {}
            for e in entries.values():
                end = e.offset + e.length
                if ends.get(e.segment, -1) < end:
                    ends[e.segment] = end
            bases: dict[int, memoryview] = {}
            gone: list[bytes] = []
            for seg, end in ends.items():
                try:
                    bases[seg] = self._store.segments.base(seg, end)
                except SegmentGone:
                    gone.extend(cid for cid, e in entries.items() if e.segment == seg)
            if not gone:
                return bases
            entries.update(self._resolve(gone))
        raise CorruptData(f"chunks of image {self._image_id} keep moving")

    def _read_ahead(self, entries: dict[bytes, ChunkEntry], bases: dict[int, memoryview]) -> None:
        """One WILLNEED per segment range the batch reads (the kernel reads it ahead)."""
        if _WILLNEED is None:
            return
        spans: dict[int, list[int]] = {}
        for e in entries.values():
            span = spans.get(e.segment)
            if span is None:
                spans[e.segment] = [e.offset, e.offset + e.length]
            else:
                span[0] = min(span[0], e.offset)
                span[1] = max(span[1], e.offset + e.length)
        for seg, (a, b) in spans.items():
            a -= a % _PAGE
            try:
                bases[seg].obj.madvise(_WILLNEED, a, b - a)
            except (ValueError, OSError):
                pass


def _drop(spans: list[tuple[Any, int, int]]) -> None:
    """Unmap consumed ranges from this process (the page cache keeps the pages)."""
    if _DONTNEED is None:
        return
    for mm, a, b in spans:
        a -= a % _PAGE
        try:
            mm.madvise(_DONTNEED, a, b - a)
        except (ValueError, OSError):          # mapping closed meanwhile: nothing to drop
            pass


class _Ahead:
    """One job running in a worker thread; its result is awaited later."""

    def __init__(self, fn: Any) -> None:
        self._event = trio.Event()
        self._done = threading.Event()
        self._result: outcome.Outcome | None = None
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome) -> None:
            self._result = result
            self._done.set()
            try:
                token.run_sync_soon(self._event.set)
            except trio.RunFinishedError:
                pass

        trio.lowlevel.start_thread_soon(fn, deliver)

    async def get(self) -> Any:
        await self._event.wait()
        assert self._result is not None
        return self._result.unwrap()

    def wait(self) -> Any:
        """The result, waited for from a worker thread."""
        self._done.wait()
        assert self._result is not None
        return self._result.unwrap()
