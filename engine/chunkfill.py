# Obtaining chunks a download needs that this node does not hold, from the chunk sources
# registered with the data path (engine/chunksource.py has the contract), for every
# download of one node at once.
# Invariants:
# - Sources are asked in registration order, each only for what is still missing.
# - Every chunk a source returns is hashed (in a worker thread) before anyone sees it; a
#   mismatch is dropped and reported to its source (`rejected`), never served or kept.
# - Concurrent downloads share one fetch per chunk: a chunk being fetched, or fetched and
#   not yet kept, is never asked of a source again.
# - Verified chunks are kept in the download's chunk store with `cache` residency by a
#   background keeper, without fsync, in the order the download wants them (the image's
#   order, whatever order the sources answered in); at most KEEP_BYTES wait to be kept at
#   once (beyond that, downloads wait: memory stays bounded). A failed keep loses nothing
#   but the copy.
# - No copies: a source's bytes (often views of one reply buffer) are hashed, served and
#   kept from the very objects it returned (one worker-thread hop hashes a source's answer).
from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

import trio

from tessera.engine import chunkput
from tessera.engine.chunkid import digest
from tessera.engine.chunksource import ChunkSource, Want
from tessera.engine.errors import TesseraError, Unavailable

KEEP_BYTES = 64 * 1024 * 1024
RECENT = 16384


class Filler:
    def __init__(self) -> None:
        self.sources: list[ChunkSource] = []
        self._flights: dict[bytes, trio.Event] = {}
        self._keeping: dict[bytes, Any] = {}
        # ids kept lately (oldest first, RECENT at most): a caller that found them lacking
        # before they were kept reads them here instead of fetching them again
        self._recent: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._keep_bytes = 0
        self._kept = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._tasks = 0
        self.fetched_bytes = 0         # bytes obtained from sources (verified)
        self.rejected = 0              # chunks dropped for failing verification

    def add(self, source: ChunkSource) -> None:
        self.sources.append(source)

    async def obtain(self, cs: Any, image: Any, wants: list[Want]) -> dict[bytes, Any]:
        """Verified bytes (bytes-like: often views of a source's reply buffer, never
        copied) of every chunk in `wants` (distinct ids the caller found not held), or
        Unavailable naming how many no source could provide. Kept into `cs` in the
        background."""
        out: dict[bytes, Any] = {}
        mine: list[Want] = []
        waits: list[tuple[Want, trio.Event]] = []
        recent: list[Want] = []
        for w in wants:
            data = self._keeping.get(w.cid)
            if data is not None:
                out[w.cid] = data
            elif (flight := self._flights.get(w.cid)) is not None:
                waits.append((w, flight))
            elif w.cid in self._recent:       # kept since the caller looked: read it here
                recent.append(w)
            else:
                self._flights[w.cid] = trio.Event()
                mine.append(w)
        got: dict[bytes, Any] = {}
        why: list[str] = []                   # what the sources that failed said
        if mine:
            try:
                got = await self._fetch(image, mine, why)
                # kept in the order of the image (sources answer in their own order), so a
                # later read of these bytes finds them adjacent: long sendfile runs
                got = {w.cid: got[w.cid] for w in mine if w.cid in got}
                await self._keep(cs, got)     # readable from _keeping before flights end
            finally:
                for w in mine:
                    self._flights.pop(w.cid).set()
            out.update(got)
        again = []
        if recent:
            held = await trio.to_thread.run_sync(chunkput.held_bytes, cs,
                                                 [w.cid for w in recent])
            out.update(held)
            again += [w for w in recent if w.cid not in held]
        for w, flight in waits:
            await flight.wait()
            data = self._keeping.get(w.cid)
            if data is None:                  # kept already, or that fetch failed
                data = (await trio.to_thread.run_sync(chunkput.held_bytes, cs, [w.cid])
                        ).get(w.cid)
            if data is None:
                again.append(w)
            else:
                out[w.cid] = data
        if len(got) < len(mine):
            said = f" ({'; '.join(why)})" if why else ""
            raise Unavailable(f"{len(mine) - len(got)} chunk(s) of image {image.id} are not "
                              f"held here and no source could provide them{said}; try again "
                              "later")
        if again:                             # another download's fetch ended without them
            for w in again:
                self._recent.pop(w.cid, None)
            out.update(await self.obtain(cs, image, again))
        return out

    async def _fetch(self, image: Any, wants: list[Want], why: list[str]) -> dict[bytes, Any]:
        """Ask each source in turn for what is still missing; chunks whose bytes failed
        verification get a second round (a source told of a bad copy, such as a peer's,
        may answer from elsewhere)."""
        got: dict[bytes, Any] = {}
        todo = wants
        for _round in range(2):
            bad: set[bytes] = set()
            for source in self.sources:
                if not todo:
                    break
                try:
                    raw = await source.fetch(image, todo)
                except TesseraError as exc:
                    why.append(exc.message)   # named by the Unavailable if none can help
                    continue                  # this source cannot help now; try the next
                if not raw:
                    continue
                by_id = {w.cid: w for w in todo}
                items = [(cid, data) for cid, data in raw.items() if cid in by_id]
                good = await trio.to_thread.run_sync(_verify, items)
                failed = 0
                for cid, data in items:
                    if cid in good:
                        got[cid] = data
                        self.fetched_bytes += len(data)
                    else:
                        failed += 1
                        bad.add(cid)
                        source.rejected(image, by_id[cid])
                if failed:
                    self.rejected += failed
                    why.append(f"{failed} chunk(s) from {source.name} failed verification")
                todo = [w for w in todo if w.cid not in got]
            todo = [w for w in todo if w.cid in bad]
            if not todo:
                break
        return got

    async def _keep(self, cs: Any, got: dict[bytes, Any]) -> None:
        """Hand verified chunks to the background keeper (waiting while too much is
        pending); they stay readable from `_keeping` until kept."""
        if not got:
            return
        size = sum(len(d) for d in got.values())
        while self._keep_bytes and self._keep_bytes + size > KEEP_BYTES:
            await self._kept.wait()
        self._keep_bytes += size
        self._keeping.update(got)
        self._tasks += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        items = list(got.items())

        async def keep() -> None:
            try:
                await chunkput.put_chunks(cs, items, store=False, durable=False,
                                          verified=True)
            except Exception:
                pass                          # the copy is lost; a later read refetches
            else:
                recent = self._recent
                recent.update(dict.fromkeys(cid for cid, _ in items))
                while len(recent) > RECENT:
                    recent.popitem(last=False)
            finally:
                for cid, _ in items:
                    self._keeping.pop(cid, None)
                self._keep_bytes -= size
                self._kept.set()
                self._kept = trio.Event()
                self._tasks -= 1
                if self._tasks == 0:
                    self._idle.set()

        trio.lowlevel.spawn_system_task(keep)

    async def settled(self) -> None:
        """Wait until every chunk handed to the keeper has been kept (or dropped)."""
        await self._idle.wait()


def _verify(items: Iterable[tuple[bytes, Any]]) -> set[bytes]:
    return {cid for cid, data in items if digest(data) == cid}


def distinct(wants: Iterable[Want]) -> list[Want]:
    seen: set[bytes] = set()
    out = []
    for w in wants:
        if w.cid not in seen:
            seen.add(w.cid)
            out.append(w)
    return out
