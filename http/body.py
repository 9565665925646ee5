# Reading request bodies for the connection handler: the Body protocol of message.py, and the
# transport the connection reads from. Invariants: a body is read at most once, in order; a
# piece handed out is valid only until the next one is requested (it may be a view of a reused
# buffer); a Content-Length body is read straight from the socket into a pooled, reused buffer
# (h11 only ever sees the head), while chunked bodies go through h11's Data events; every
# wait for body bytes is bounded by body_timeout; chunked bodies have h11 parse the framing
# only, their chunk data is read straight into the pooled buffer too; `Expect: 100-continue` is answered only when
# the handler starts reading.
from __future__ import annotations

import os

import h11
import trio
# Private h11 readers: the fast paths read body bytes around h11 and keep the reader's
# counters exactly as h11 itself would (checked by type, so another h11 falls back safely).
from h11._readers import ChunkedReader, ContentLengthReader

from tessera.engine.errors import TooLarge
from tessera.http.errors import BodyIncomplete

BODY_BUFFER = 1024 * 1024     # size of a pooled receive buffer for request bodies
FEED = 65536                  # bytes handed to h11 at a time while it parses framing
FRAMING_FEED = 64             # ... once chunks are known to be large: just the next header
POOL_KEEP = 16                # pooled buffers kept for reuse when idle


class BufferPool:
    """Reusable bytearrays: fresh memory costs page faults on this machine (limits.md 6c)."""

    def __init__(self, size: int = BODY_BUFFER, keep: int = POOL_KEEP) -> None:
        self.size = size
        self.keep = keep
        self._free: list[bytearray] = []

    def take(self) -> bytearray:
        return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        if len(self._free) < self.keep:
            self._free.append(buf)


class Transport:
    """The byte stream of one connection: recv_into a caller's buffer, send_all, close."""

    __slots__ = ("stream", "sock", "recv_into", "fd")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.sock = getattr(stream, "socket", None)
        if self.sock is not None:
            self.recv_into = self.sock.recv_into
            self.fd = self.sock.fileno()         # for non-blocking reads of body bytes
        else:                                    # in-memory streams (tests)
            self.recv_into = self._recv_into_copy
            self.fd = -1

    async def _recv_into_copy(self, buf, nbytes: int = 0) -> int:
        data = await self.stream.receive_some(nbytes or len(buf))
        buf[:len(data)] = data
        return len(data)

    async def send_all(self, data) -> None:
        await self.stream.send_all(data)


class RequestBody:
    """The Body of one request (see tessera.http.message.Body)."""

    __slots__ = ("length", "present", "_conn", "_transport", "_pool", "_timeout", "_buf",
                 "_view", "_started", "_done", "_reader", "_from_h11", "received", "_chunked",
                 "_feed")

    def __init__(self, conn: h11.Connection, transport: Transport, pool: BufferPool,
                 timeout: float, length: int | None, present: bool) -> None:
        self.length = length
        self.present = present
        self.received = 0
        self._conn = conn
        self._transport = transport
        self._pool = pool
        self._timeout = timeout
        self._buf: bytearray | None = None
        self._view: memoryview | None = None
        self._started = False
        self._done = False
        self._from_h11 = True       # pieces come from h11's buffer until it runs dry
        reader = getattr(conn, "_reader", None)
        self._reader = reader if type(reader) is ContentLengthReader \
            and hasattr(reader, "_remaining") else None
        self._chunked = reader if type(reader) is ChunkedReader and hasattr(
            reader, "_bytes_in_chunk") and hasattr(reader, "_bytes_to_discard") and hasattr(
            reader, "_reading_trailer") else None
        self._feed = FEED

    @property
    def done(self) -> bool:
        return self._done

    def finish_if_empty(self) -> bool:
        """True when the body is over: already read, or known empty (Content-Length 0 or
        absent, not chunked), in which case h11's end of message is taken here, with no
        read and no timeout (the common bodiless GET)."""
        if self._done:
            return True
        reader = self._reader
        if reader is None or reader._remaining or not self._from_h11:
            return False
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError:
            return False
        if type(event) is h11.EndOfMessage:
            self._done = True
            return True
        return False

    def release(self) -> None:
        """Give the pooled buffer back; called by the server when the request cycle ends."""
        if self._buf is not None:
            self._pool.give(self._buf)
            self._buf = None
            self._view = None

    async def read_all(self, limit: int) -> bytes:
        if self.length is not None and self.length > limit:
            raise TooLarge(f"The request body is larger than the limit of {limit} bytes.")
        parts = []
        total = 0
        async for piece in self:
            total += len(piece)
            if total > limit:
                raise TooLarge(f"The request body is larger than the limit of {limit} bytes.")
            parts.append(bytes(piece))
        return b"".join(parts)

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> memoryview:
        if not self._started:
            self._started = True
            if self._conn.they_are_waiting_for_100_continue:
                await self._transport.send_all(
                    self._conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        piece = await self.next_piece()
        if piece is None:
            raise StopAsyncIteration
        return piece

    async def next_piece(self) -> memoryview | None:
        """The next piece, or None at the end of the body (no 100-continue is sent here)."""
        if self._done:
            return None
        conn = self._conn
        while self._from_h11:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise BodyIncomplete(f"malformed request body: {exc}", 400) from None
            if type(event) is h11.Data:
                if event.chunk_start and event.chunk_end:
                    self._feed = FEED          # small chunks: let h11 parse them in bulk
                self.received += len(event.data)
                return memoryview(event.data)
            if type(event) is h11.EndOfMessage:
                self._done = True
                return None
            if event is h11.NEED_DATA:
                if self._reader is not None:
                    self._from_h11 = False     # h11's buffer is empty: read around it
                    break
                chunked = self._chunked
                if chunked is not None and chunked._bytes_in_chunk > 0 \
                        and not chunked._bytes_to_discard and not chunked._reading_trailer:
                    return await self._read_chunk_data(chunked)
                await self._feed_h11()
                continue
            raise BodyIncomplete(f"unexpected event {type(event).__name__}")
        return await self._read_direct()

    async def _feed_h11(self) -> None:
        n = await self._recv(self._feed)
        self._conn.receive_data(self._view[:n])

    async def _read_chunk_data(self, reader: ChunkedReader) -> memoryview:
        """Data of the current chunk straight from the socket (h11's buffer is empty)."""
        left = reader._bytes_in_chunk
        if left >= FEED:
            self._feed = FRAMING_FEED      # large chunks: give h11 only the framing
        n = await self._recv(min(left, BODY_BUFFER))
        left -= n
        reader._bytes_in_chunk = left
        if left == 0:
            reader._bytes_to_discard = b"\r\n"     # what h11 expects after a chunk
        self.received += n
        return self._view[:n]

    async def _recv(self, nbytes: int) -> int:
        if self._buf is None:
            self._buf = self._pool.take()
            self._view = memoryview(self._buf)
        fd = self._transport.fd
        if fd >= 0:
            # Bytes already waiting (the usual case during an upload): read them without
            # arming a timeout; a checkpoint keeps the loop fair, as trio's own recv does.
            try:
                n = os.readv(fd, (self._view[:nbytes],))
            except BlockingIOError:
                n = -1
            except OSError as exc:
                raise BodyIncomplete(f"connection lost while reading the body: {exc}") from None
            if n >= 0:
                await trio.lowlevel.checkpoint()
                if n == 0:
                    raise BodyIncomplete("the client closed the connection before the body "
                                         "ended")
                return n
        with trio.move_on_after(self._timeout) as scope:
            try:
                n = await self._transport.recv_into(self._buf, nbytes)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise BodyIncomplete(f"connection lost while reading the body: {exc}") from None
        if scope.cancelled_caught:
            raise BodyIncomplete("the client paused the body longer than body_timeout")
        if n == 0:
            raise BodyIncomplete("the client closed the connection before the body ended")
        return n

    async def _read_direct(self) -> memoryview | None:
        reader = self._reader
        remaining = reader._remaining
        if remaining == 0:
            event = self._conn.next_event()
            if type(event) is not h11.EndOfMessage:
                raise BodyIncomplete(f"unexpected event {type(event).__name__}")
            self._done = True
            return None
        n = await self._recv(min(remaining, BODY_BUFFER))
        reader._remaining = remaining - n
        self.received += n
        return self._view[:n]
