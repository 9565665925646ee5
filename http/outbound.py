# Outbound HTTP requests the server makes on a user's behalf (web-download's fetch, the
# reads of an image's HTTP location): one GET to addresses pinned beforehand
# (tessera.http.webdownload.pin), through h11, streamed.
# Invariants:
# - Connections go only to the pinned addresses, tried in order; nothing is resolved here
#   (no DNS rebinding between the filter and the connection).
# - Redirects are never followed (the caller sees the 3xx status): a redirect would be a
#   second, unfiltered request.
# - Every wait is capped: connect, each send and read (read_timeout), and the whole exchange
#   (download_timeout, from the moment the request opens). Failures are engine errors
#   (Unavailable); the body is handed on piece by piece, never buffered whole.
from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import h11
import trio

from tessera.engine.errors import Unavailable

if TYPE_CHECKING:
    from tessera.http.webdownload import ImportConfig, Target

DEFAULT_PORTS = {"http": 80, "https": 443}
READ_SIZE = 256 * 1024


class Exchange:
    """One GET: `await open()` sends the request and reads the status line and headers;
    `async for piece in body()` streams the body; `aclose()` always closes the connection."""

    def __init__(self, target: "Target", addresses: tuple[str, ...], cfg: "ImportConfig",
                 headers: list[tuple[str, str]], agent: str) -> None:
        self.target = target
        self._addresses = addresses
        self._cfg = cfg
        self._headers = headers
        self._agent = agent
        self._stream: trio.abc.Stream | None = None
        self._conn = h11.Connection(h11.CLIENT)
        self._deadline = 0.0
        self.status = 0
        self.headers: dict[bytes, bytes] = {}

    async def open(self) -> "Exchange":
        target, cfg = self.target, self._cfg
        self._deadline = time.monotonic() + cfg.download_timeout
        self._stream = await _connect(target, self._addresses, cfg)
        host = target.host if target.port == DEFAULT_PORTS[target.scheme] \
            else f"{target.host}:{target.port}"
        request = h11.Request(method="GET", target=target.path, headers=[
            ("Host", host), ("User-Agent", self._agent), ("Accept", "*/*"),
            *self._headers, ("Connection", "close")])
        conn = self._conn
        await _send(self._stream, conn.send(request) + conn.send(h11.EndOfMessage()), cfg)
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = {k.lower(): v for k, v in event.headers}
                return self
            if isinstance(event, h11.ConnectionClosed):
                raise Unavailable(f"{target.uri}: the server closed the connection")

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower().encode())
        return None if value is None else value.decode("latin-1")

    @property
    def length(self) -> int | None:
        value = self.header("content-length")
        return int(value) if value is not None and value.isdigit() else None

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def _next(self) -> object:
        conn = self._conn
        try:
            while True:
                event = conn.next_event()
                if event is not h11.NEED_DATA:
                    return event
                assert self._stream is not None
                conn.receive_data(await _receive(self._stream, self._cfg, self._deadline,
                                                 self.target))
        except h11.RemoteProtocolError as exc:
            raise Unavailable(f"{self.target.uri}: bad HTTP response ({exc})") from None

    async def aclose(self) -> None:
        if self._stream is not None:
            with trio.CancelScope(shield=True):
                await self._stream.aclose()
            self._stream = None

    async def __aenter__(self) -> "Exchange":
        try:
            return await self.open()
        except BaseException:
            await self.aclose()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def get(target: "Target", addresses: tuple[str, ...], cfg: "ImportConfig", *,
        headers: list[tuple[str, str]] | None = None, agent: str = "tessera") -> Exchange:
    """`async with get(...) as reply:` one GET to the pinned `addresses`."""
    return Exchange(target, addresses, cfg, list(headers or ()), agent)


async def _connect(target: "Target", addresses: tuple[str, ...],
                   cfg: "ImportConfig") -> trio.abc.Stream:
    try:
        with trio.fail_after(cfg.connect_timeout):
            stream: trio.abc.Stream | None = None
            for address in addresses:           # the pinned ones only, in order
                try:
                    stream = await trio.open_tcp_stream(address, target.port)
                    break
                except OSError:
                    if address == addresses[-1]:
                        raise
            if target.scheme == "https":
                assert stream is not None
                tls = trio.SSLStream(stream, ssl.create_default_context(),
                                     server_hostname=target.host, https_compatible=True)
                await tls.do_handshake()
                stream = tls
    except trio.TooSlowError:
        raise Unavailable(f"timed out connecting to {target.uri}") from None
    except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
        raise Unavailable(f"cannot reach {target.uri}: {exc}") from None
    assert stream is not None
    return stream


async def _send(stream: trio.abc.Stream, data: bytes, cfg: "ImportConfig") -> None:
    try:
        with trio.fail_after(cfg.read_timeout):
            await stream.send_all(data)
    except (trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
        raise Unavailable(f"cannot send the request: {exc!r}") from None


async def _receive(stream: trio.abc.Stream, cfg: "ImportConfig", deadline: float,
                   target: "Target") -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise Unavailable(f"{target.uri}: the download took longer than "
                          f"{cfg.download_timeout:g} s")
    try:
        with trio.fail_after(min(cfg.read_timeout, left)):
            return await stream.receive_some(READ_SIZE)
    except trio.TooSlowError:
        raise Unavailable(f"{target.uri}: no data for {min(cfg.read_timeout, left):g} s "
                          f"(read or transfer time cap)") from None
    except (trio.BrokenResourceError, OSError) as exc:
        raise Unavailable(f"{target.uri}: connection lost ({exc})") from None
