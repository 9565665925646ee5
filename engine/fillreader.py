# Reading an image whose chunks may live on other nodes: the manifest is walked in windows
# of whole extents; the chunks of a window this node does not hold are handed to a `source`
# (installed by a replication layer: it fetches, verifies and stores them) and the window is
# then read locally by the ordinary ChunkReader, so every byte served is verified as usual.
# Invariants:
# - Up to AHEAD windows are being filled while the consumer reads an earlier one, so a cold
#   read streams: its first bytes leave once the first window is filled.
# - A window whose chunks the source could not provide raises the source's error (usually
#   Unavailable) when the consumer reaches it, never earlier and never as bad bytes.
# - The engine knows nothing of where chunks come from: `source(ids)` is an async callable.
from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import outcome
import trio

from tessera.engine import manifest
from tessera.engine.errors import NotFound
from tessera.engine.index import unpack
from tessera.engine.reader import ChunkReader

WINDOW = 4 * 1024 * 1024
AHEAD = 4
Source = Callable[[list[bytes]], Awaitable[None]]


class FillReader:
    def __init__(self, store: Any, image_id: str, start: int, end: int,
                 source: Source) -> None:
        self._store = store
        self._image_id = image_id
        self._key = manifest.image_key(image_id)
        self._source = source
        self.start, self.end = start, end
        self._windows = self._plan()
        self._pending: collections.deque[tuple[int, int, _Fill]] = collections.deque()
        self._current: ChunkReader | None = None
        self._closed = False

    def __aiter__(self) -> "FillReader":
        return self

    async def __anext__(self) -> memoryview:
        while True:
            if self._current is not None:
                try:
                    return await self._current.__anext__()
                except StopAsyncIteration:
                    self._current = None
            if self._closed:
                raise StopAsyncIteration
            self._ahead()
            if not self._pending:
                self._closed = True
                raise StopAsyncIteration
            a, b, fill = self._pending.popleft()
            await fill.wait()
            self._ahead()
            self._current = ChunkReader(self._store, self._image_id, a, b)

    async def aclose(self) -> None:
        self._closed = True
        self._pending.clear()       # fills still running complete into the cache
        if self._current is not None:
            await self._current.aclose()

    def _ahead(self) -> None:
        while len(self._pending) < AHEAD:
            try:
                a, b, ids = next(self._windows)
            except StopIteration:
                return
            self._pending.append((a, b, _Fill(self._source, self._missing(ids))))

    def _missing(self, ids: set[bytes]) -> list[bytes]:
        out = []
        with self._store.index.read() as txn:
            for cid in ids:
                raw = txn.get(cid, db=self._store.db.chunks)
                if raw is None or unpack(raw)[0] is None:
                    out.append(cid)
        return out

    def _plan(self) -> Iterator[tuple[int, int, set[bytes]]]:
        db = self._store.db.manifests
        with self._store.index.read() as txn:
            head = manifest.read_head(txn, db, self._key)
        if head is None:
            raise NotFound(f"image {self._image_id} has no data")
        pos, end = self.start, self.end
        number = manifest.page_for(head, pos) if head.pages else 0
        while pos < end:
            with self._store.index.read() as txn:
                page = manifest.read_page(txn, db, self._key, number)
            if page is None:
                raise NotFound(f"the data of image {self._image_id} was deleted")
            starts = page.starts
            i = page.find(pos)
            window_start, ids = pos, set()
            while i < len(page.lengths) and pos < end:
                if page.ids[i] is not None:
                    ids.add(page.ids[i])
                pos = min(end, starts[i] + page.lengths[i])
                i += 1
                if pos - window_start >= WINDOW:
                    yield window_start, pos, ids
                    window_start, ids = pos, set()
            if pos > window_start:
                yield window_start, pos, ids
            number += 1


class _Fill:
    """`source(ids)` running as a system task; wait() re-raises its failure."""

    def __init__(self, source: Source, ids: list[bytes]) -> None:
        self._done = trio.Event()
        self._result: outcome.Outcome = outcome.Value(None)
        if not ids:
            self._done.set()
            return

        async def run() -> None:
            self._result = await outcome.acapture(source, ids)
            self._done.set()

        trio.lowlevel.spawn_system_task(run)

    async def wait(self) -> None:
        await self._done.wait()
        self._result.unwrap()
