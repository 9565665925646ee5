# Calling peers: signed HTTP/1.1 requests (h11 on trio) with a small pool of keep-alive
# connections per peer.
# Invariants: every request is signed with the cluster key; any failure (refused, timeout,
# non-200, bad reply) raises PeerError and the connection is dropped, never reused; a
# connection goes back to the pool only after a complete exchange; the outcome of the latest
# call to each address is remembered (peer health for metrics).
from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any

import h11
import trio

from tessera.replication import messages as m
from tessera.replication import rawchunks
from tessera.replication.auth import sign
from tessera.replication.buffers import BufferPool

TIMEOUT = 30.0
POOL = 8
RECEIVE = 1024 * 1024        # bytes per receive: replies to chunks/get are a few MiB
HEAD_RECEIVE = 64 * 1024     # the first receive of a reply (its head and a little body)
MAX_REPLY = 256 * 1024 * 1024   # a larger Content-Length is a protocol error
THREAD_RECEIVE = 256 * 1024  # a reply body longer than this is received by a worker thread
RECEIVE_WAIT = 0.25          # one blocking receive of such a body waits at most this long
_RCVTIMEO = struct.pack("ll", 0, int(RECEIVE_WAIT * 1_000_000))


class PeerError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status         # the peer's HTTP status when it answered, else None


class PeerClient:
    def __init__(self, key: bytes, node_id: str) -> None:
        self.key = key
        self.node_id = node_id
        self._idle: dict[str, list[trio.SocketStream]] = {}
        self.blocked = False         # partition(): every call fails at once
        self.bytes_sent = 0          # wire bytes of complete exchanges (heads included)
        self.bytes_received = 0
        # per address: (last call succeeded, its monotonic time) and the last success time
        self.contact: dict[str, tuple[bool, float]] = {}
        self.last_ok: dict[str, float] = {}
        self._buffers = BufferPool()   # chunks/read replies are received into these

    async def call(self, address: str, msg: Any, *, timeout: float = TIMEOUT) -> Any:
        """Send `msg` to the peer at HOST:PORT; its reply message (for ReadChunks:
        [(id, view of its bytes or None)], rawchunks.decode)."""
        if self.blocked:
            self.contact[address] = (False, time.monotonic())
            raise PeerError(f"{address}: this node is partitioned off its peers")
        body = m.encode(msg)
        stream = None
        try:
            with trio.fail_after(timeout):
                stream = await self._connect(address)
                status, payload, reusable, sent, received = await _exchange(
                    stream, address, msg.ROUTE, body,
                    sign(self.key, self.node_id, "POST", msg.ROUTE, body),
                    self._buffers.take if isinstance(msg, m.ReadChunks) else bytearray)
            self.bytes_sent += sent
            self.bytes_received += received
            if status != 200:
                raise PeerError(f"{address} answered {status} to {msg.ROUTE}", status)
            if isinstance(msg, m.ReadChunks):    # raw bytes: views of the one buffer
                reply = rawchunks.decode(payload, msg.ids)
            else:
                reply = m.decode(m.REPLIES[type(msg)], payload)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError,
                trio.ClosedResourceError, h11.ProtocolError, m.ProtocolError) as exc:
            self.contact[address] = (False, time.monotonic())
            if stream is not None:
                await stream.aclose()
            raise PeerError(f"{address}: {exc!r}") from None
        except BaseException:
            if stream is not None:
                await stream.aclose()
            raise
        now = time.monotonic()
        self.contact[address] = (True, now)
        self.last_ok[address] = now
        idle = self._idle.setdefault(address, [])
        if reusable and len(idle) < POOL:
            idle.append(stream)
        else:
            await stream.aclose()
        return reply

    async def _connect(self, address: str) -> trio.SocketStream:
        idle = self._idle.get(address)
        if idle:
            return idle.pop()
        host, _, port = address.rpartition(":")
        return await trio.open_tcp_stream(host.strip("[]"), int(port))

    async def aclose(self) -> None:
        for streams in self._idle.values():
            for s in streams:
                await s.aclose()
        self._idle.clear()


async def _exchange(stream: trio.SocketStream, address: str, path: str, body: bytes,
                    auth: list[tuple[str, str]], allocate: Any = bytearray
                    ) -> tuple[int, Any, bool, int, int]:
    """(status, reply body, connection reusable, bytes sent, bytes received).
    `allocate(n)`: a writable buffer of n bytes for a Content-Length body.

    h11 parses the reply's head; a Content-Length body is then read straight from the
    socket into one buffer (replies to chunks/get carry MiBs of chunk bytes: no copies
    through h11's receive buffer), any other framing through h11."""
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", address), ("content-type", "application/msgpack"),
               ("content-length", str(len(body))), *auth]
    out = conn.send(h11.Request(method="POST", target=path, headers=headers))
    out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(out)
    received = 0
    while True:
        event, n = await _next_event(stream, conn, HEAD_RECEIVE)
        received += n
        if isinstance(event, h11.Response):
            break
    response = event
    status = response.status_code
    fields = {k: v for k, v in response.headers}
    if b"content-length" not in fields or b"chunked" in fields.get(b"transfer-encoding", b""):
        return await _h11_body(stream, conn, status, len(out), received)
    length = int(fields[b"content-length"])
    if length > MAX_REPLY:
        raise m.ProtocolError(f"a {length}-byte reply (at most {MAX_REPLY})")
    buf = allocate(length)
    view = memoryview(buf)
    got = 0
    while got < length:                    # what h11 read past the head
        event = conn.next_event()
        if not isinstance(event, h11.Data):
            break
        view[got:got + len(event.data)] = event.data
        got += len(event.data)
    sock = stream.socket
    if length - got >= THREAD_RECEIVE:
        # one worker thread takes the rest with blocking receives (MSG_WAITALL: a few
        # syscalls for MiBs, no event-loop round per segment the loopback delivers)
        deadline = time.monotonic() + max(0.0, trio.current_effective_deadline()
                                          - trio.current_time())
        n = await trio.to_thread.run_sync(_receive_all, sock, view[got:], deadline)
        got += n
        received += n
    while got < length:
        n = await sock.recv_into(view[got:], min(RECEIVE, length - got))
        if n == 0:
            raise trio.BrokenResourceError("peer closed the connection mid-reply")
        got += n
        received += n
    reusable = (conn.our_state is h11.DONE and response.http_version == b"1.1"
                and fields.get(b"connection", b"").lower() != b"close")
    return status, buf, reusable, len(out), received


def _receive_all(sock: Any, view: memoryview, deadline: float) -> int:
    """Worker thread: fill `view` from the socket, blocking (each receive waits at most
    RECEIVE_WAIT); raises BrokenResourceError if the peer closes first, TooSlowError past
    `deadline` (monotonic). The socket is non-blocking again when this returns, and only
    this thread reads it meanwhile (the calling task awaits it)."""
    fd = sock.fileno()
    got, size = 0, len(view)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _RCVTIMEO)
    # a standard socket object over the same descriptor (detached again, never closed)
    raw = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
    raw.setblocking(True)
    try:
        while got < size:
            try:
                n = raw.recv_into(view[got:], size - got, socket.MSG_WAITALL)
            except (BlockingIOError, InterruptedError):
                n = -1                     # RECEIVE_WAIT passed without a byte
            if n == 0:
                raise trio.BrokenResourceError("peer closed the connection mid-reply")
            if n > 0:
                got += n
            if got < size and time.monotonic() > deadline:
                raise trio.TooSlowError()
        return got
    finally:
        raw.detach()
        os.set_blocking(fd, False)


async def _h11_body(stream: trio.SocketStream, conn: h11.Connection, status: int, sent: int,
                    received: int) -> tuple[int, bytes, bool, int, int]:
    parts = []
    while True:
        event, n = await _next_event(stream, conn, RECEIVE)
        received += n
        if isinstance(event, h11.Data):
            parts.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
            return status, b"".join(parts), reusable, sent, received


async def _next_event(stream: trio.SocketStream, conn: h11.Connection,
                      size: int) -> tuple[Any, int]:
    """h11's next event other than NEED_DATA, fed from the stream `size` bytes at a time;
    also the number of bytes read. A closed connection raises BrokenResourceError."""
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(size)
            if not data:
                raise trio.BrokenResourceError("peer closed the connection")
            received += len(data)
            conn.receive_data(data)
        elif isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("peer closed the connection")
        else:
            return event, received
