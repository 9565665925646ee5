# The chunk source (engine/chunksource.py) of images registered at an HTTP location: the
# chunks a download lacks are read from the image's origin with ranged GETs.
# Invariants:
# - Every request goes through web-download's safety (tessera.http.webdownload): the URL is
#   filtered again at read time (the operator may have tightened [import]), the host is
#   resolved once per fetch and only pinned, allowed addresses are connected to; each request
#   is capped in time (tessera.http.outbound) and in bytes (the range asked for).
# - Adjacent wants are coalesced into one Range request of at most MAX_RANGE bytes; at most
#   PARALLEL requests per fetch run at once; memory is bounded by what was asked for.
# - The origin is never trusted: the engine hashes every chunk returned here. A chunk that
#   fails (`rejected`), or an origin whose size is no longer the image's, marks the image
#   (engine/locations.py mark_changed) so an operator sees why its downloads fail.
# - An origin that is down or answers an error yields nothing (the engine then raises
#   Unavailable for what nobody provided): a later download simply tries again. An image
#   with several locations (legacy PATCH) asks them in order, each for what is still missing.
from __future__ import annotations

import logging
import re
from typing import Any

import trio

from tessera.engine.chunksource import Want
from tessera.engine.errors import TesseraError
from tessera.http import outbound, webdownload
from tessera.http.webdownload import ImportConfig, Target

log = logging.getLogger("tessera.origin")

MAX_RANGE = 16 * 1024 * 1024
PARALLEL = 4
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)$")


def coalesce(wants: list[Want], limit: int = MAX_RANGE) -> list[list[Want]]:
    """`wants` in offset order, grouped into runs of adjacent ones of at most `limit` bytes
    (a single want larger than `limit` is a run of its own)."""
    runs: list[list[Want]] = []
    end = -1
    for w in sorted(wants, key=lambda w: w.offset):
        if runs and w.offset == end and end - runs[-1][0].offset + w.length <= limit:
            runs[-1].append(w)
        else:
            runs.append([w])
        end = w.offset + w.length
    return runs


class OriginSource:
    """`fetch(image, wants)`: the wanted chunks of an image with an http(s) location."""

    name = "origin"

    def __init__(self, cfg: ImportConfig, locations: Any, *, parallel: int = PARALLEL,
                 max_range: int = MAX_RANGE) -> None:
        self.cfg = cfg
        self.locations = locations          # engine/locations.py Locations (mark_changed)
        self.parallel = parallel
        self.max_range = max_range
        self.requests = 0                   # ranged GETs sent (statistics, tests)
        self.fetched_bytes = 0
        self._token: trio.lowlevel.TrioToken | None = None

    async def fetch(self, image: Any, wants: list[Want]) -> dict[bytes, bytes]:
        if image.size is None or not wants:
            return {}
        self._token = trio.lowlevel.current_trio_token()
        out: dict[bytes, bytes] = {}
        for url in _origin_urls(image):          # the next location only for what is left
            left = [w for w in wants if w.cid not in out]
            if not left:
                break
            out.update(await self._from(image, url, left))
        return out

    async def _from(self, image: Any, url: str, wants: list[Want]) -> dict[bytes, bytes]:
        target = webdownload.check_uri(url, self.cfg)
        if target is None:
            log.warning("image %s: its location %s no longer passes the [import] filter",
                        image.id, url)
            return {}
        try:
            addresses = await webdownload.pin(target, self.cfg)
        except TesseraError as exc:
            log.warning("image %s: %s", image.id, exc)
            return {}
        if addresses is None:
            log.warning("image %s: its location %s resolves to a refused address",
                        image.id, url)
            return {}
        out: dict[bytes, bytes] = {}
        limiter = trio.Semaphore(self.parallel)

        async def one(run: list[Want]) -> None:
            async with limiter:
                await self._range(image, target, addresses, run, out)

        async with trio.open_nursery() as nursery:
            for run in coalesce(wants, self.max_range):
                nursery.start_soon(one, run)
        return out

    async def _range(self, image: Any, target: Target, addresses: tuple[str, ...],
                     run: list[Want], out: dict[bytes, bytes]) -> None:
        first = run[0].offset
        last = run[-1].offset + run[-1].length          # exclusive
        self.requests += 1
        try:
            async with outbound.get(target, addresses, self.cfg, agent="tessera-origin",
                                    headers=[("Range", f"bytes={first}-{last - 1}")]) as reply:
                skip = self._check(image, reply, first, last)
                if skip is None:
                    return
                data = await _read(reply, skip, last - first)
        except TesseraError as exc:
            log.warning("image %s: reading %s failed: %s", image.id, target.uri, exc)
            return
        self.fetched_bytes += len(data)
        for w in run:
            a = w.offset - first
            if a + w.length <= len(data):
                out[w.cid] = bytes(data[a:a + w.length])

    def _check(self, image: Any, reply: outbound.Exchange, first: int,
               last: int) -> int | None:
        """How many leading body bytes to skip, or None when the answer is unusable."""
        size = image.size
        if reply.status == 206:
            m = _CONTENT_RANGE.match(reply.header("content-range") or "")
            if m is None or int(m.group(1)) != first or int(m.group(2)) != last - 1:
                log.warning("image %s: the origin answered a Range request with %r",
                            image.id, reply.header("content-range"))
                return None
            if m.group(3) != "*" and int(m.group(3)) != size:
                self._changed(image, f"{reply.target.uri} now holds {m.group(3)} bytes, "
                                     f"the image {size}")
                return None
            return 0
        if reply.status == 200:                  # Range ignored: the whole body follows
            if reply.length is not None and reply.length != size:
                self._changed(image, f"{reply.target.uri} now holds {reply.length} bytes, "
                                     f"the image {size}")
                return None
            return first
        if reply.status == 416:
            self._changed(image, f"{reply.target.uri} cannot serve bytes {first}-{last - 1} "
                                 f"of {size} any more (HTTP 416)")
            return None
        log.warning("image %s: the origin answered HTTP %d", image.id, reply.status)
        return None

    def rejected(self, image: Any, want: Want) -> None:
        self._changed(image, f"the {want.length} bytes at offset {want.offset} no longer "
                             f"match the image's chunk {want.cid.hex()[:16]}")

    def _changed(self, image: Any, detail: str) -> None:
        """Mark the image (a writer job) from the event loop or from a worker thread."""
        async def mark() -> None:
            try:
                await self.locations.mark_changed(image.id, detail)
            except TesseraError as exc:
                log.warning("image %s: cannot record the origin change: %s", image.id, exc)

        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            if self._token is not None:
                self._token.run_sync_soon(trio.lowlevel.spawn_system_task, mark)
            return
        trio.lowlevel.spawn_system_task(mark)


def _origin_urls(image: Any) -> list[str]:
    return [url for url, _meta in getattr(image, "locations", ()) or ()
            if url.lower().startswith(("http://", "https://"))]


async def _read(reply: outbound.Exchange, skip: int, length: int) -> bytearray:
    """`length` body bytes after the first `skip` (fewer if the body ends early); stops
    reading once it has them."""
    data = bytearray()
    body = reply.body()
    try:
        async for piece in body:
            if skip:
                if len(piece) <= skip:
                    skip -= len(piece)
                    continue
                piece, skip = piece[skip:], 0
            data += piece[:length - len(data)]
            if len(data) >= length:
                break
    finally:
        await body.aclose()
    return data
