# The private peer listener: HTTP/1.1 (h11 on trio) serving only /peer/v1/ routes, every
# request authenticated (auth.py) before its body is decoded.
# Invariants: never serves the public API (anything else is 404); an unauthenticated request
# gets 401 and its body is never decoded; bodies are capped (413); one bad peer connection
# never affects another; handlers are `async (node_id, message) -> reply message`, or a
# RawReply (chunks/read): its parts are written by one worker thread with the socket
# blocking (writev; sendfile for runs of segment files), bounded by RAW_SEND_TIMEOUT.
from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio

from tessera.engine.reader import FileRange, write_some
from tessera.replication import messages as m
from tessera.replication import rawchunks
from tessera.replication.auth import AuthError, Verifier

MAX_BODY = 64 * 1024 * 1024
IDLE_TIMEOUT = 60.0
RAW_SEND_TIMEOUT = 30.0     # a chunks/read reply must leave within this (the caller's timeout)
SEND_WAIT = 0.25            # one blocking write of a raw reply waits at most this for room
_SNDTIMEO = struct.pack("ll", 0, int(SEND_WAIT * 1_000_000))
Handler = Callable[[str, Any], Awaitable[Any]]
log = logging.getLogger("tessera.peer")


class PeerServer:
    def __init__(self, verifier: Verifier, handlers: dict[type, Handler]) -> None:
        self.verifier = verifier
        self.handlers = handlers
        self.refused = 0

    async def serve(self, host: str, port: int, *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners[0].socket.getsockname()[:2])
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    request, body = await _read_request(conn, stream)
                if idle.cancelled_caught or request is None:
                    return
                status, payload = await self._answer(request, body)
                if isinstance(payload, RawReply):
                    await _send_raw(stream, conn, payload)
                else:
                    headers = [("content-type", "application/msgpack"),
                               ("content-length", str(len(payload)))]
                    await stream.send_all(conn.send(h11.Response(status_code=status,
                                                                 headers=headers)))
                    await stream.send_all(conn.send(h11.Data(data=payload)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except _TooLarge:
            try:
                payload = m.encode(m.Status({"error": "body too large"}))
                await stream.send_all(conn.send(h11.Response(status_code=413, headers=[
                    ("content-length", str(len(payload))), ("connection", "close")])))
                await stream.send_all(conn.send(h11.Data(data=payload)))
            except (h11.LocalProtocolError, trio.BrokenResourceError,
                    trio.ClosedResourceError):
                pass
            return
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except Exception:
            log.exception("peer connection failed")
        finally:
            await stream.aclose()

    async def _answer(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        path = request.target.decode("ascii", "replace")
        method = request.method.decode("ascii", "replace")
        if method != "POST" or path not in m.REQUESTS:
            return 404, m.encode(m.Status({"error": "no such peer route"}))
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        try:
            node = self.verifier.verify(method, path, body, headers)
        except AuthError as exc:
            self.refused += 1
            return 401, m.encode(m.Status({"error": str(exc)}))
        try:
            msg = m.decode_request(path, body)
            reply = await self.handlers[type(msg)](node, msg)
        except m.ProtocolError as exc:
            return 400, m.encode(m.Status({"error": str(exc)}))
        except Exception as exc:                      # a failed handler: the peer retries
            log.warning("peer request %s from %s failed: %r", path, node, exc)
            return 500, m.encode(m.Status({"error": type(exc).__name__}))
        if isinstance(reply, RawReply):
            return 200, reply
        return 200, m.encode(reply)


class RawReply:
    """A 200 reply whose body is `header` then `parts` (bytes-like views or FileRange runs
    of segment files), sent as is: a handler's answer to chunks/read (rawchunks.py)."""

    __slots__ = ("header", "parts", "length")

    def __init__(self, header: bytes, parts: list[Any]) -> None:
        self.header, self.parts = header, parts
        self.length = len(header) + sum(len(p) for p in parts)


async def _send_raw(stream: trio.SocketStream, conn: h11.Connection, reply: RawReply) -> None:
    """The reply's head and body, written by one worker thread (writev, sendfile for file
    runs: the bytes never enter this process). h11 is told of every part (it only takes
    their lengths) so its framing stays exact."""
    head = conn.send(h11.Response(status_code=200, headers=[
        ("content-type", rawchunks.CONTENT_TYPE), ("content-length", str(reply.length))]))
    pending: list[Any] = [head, reply.header]
    conn.send(h11.Data(data=reply.header))
    for part in reply.parts:
        conn.send_with_data_passthrough(h11.Data(data=part))
        pending.append(part)
    conn.send(h11.EndOfMessage())
    try:
        done = await trio.to_thread.run_sync(_write_all, stream.socket, pending,
                                             RAW_SEND_TIMEOUT)
    except OSError as exc:               # the caller went away (EPIPE, reset)
        raise trio.BrokenResourceError(repr(exc)) from None
    if not done:
        raise trio.BrokenResourceError("the caller took no reply bytes for too long")


def _write_all(sock: Any, pending: list[Any], timeout: float) -> bool:
    """Worker thread: write every part with the socket blocking (each write waits at most
    SEND_WAIT for room); False if `timeout` passed first. The socket is non-blocking again
    when this returns, and only this thread writes it meanwhile (the task awaits it)."""
    fd = sock.fileno()
    deadline = time.monotonic() + timeout
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _SNDTIMEO)
    os.set_blocking(fd, True)
    try:
        while pending:
            try:
                n = write_some(fd, pending)
            except BlockingIOError:
                n = 0
            while n and n >= len(pending[0]):
                n -= len(pending[0])
                del pending[0]
            if n:
                head = pending[0]
                pending[0] = head.tail(n) if isinstance(head, FileRange) else \
                    memoryview(head)[n:]
            if pending and time.monotonic() > deadline:
                return False
        return True
    finally:
        os.set_blocking(fd, False)



class _TooLarge(Exception):
    pass


async def _read_request(conn: h11.Connection,
                        stream: trio.SocketStream) -> tuple[h11.Request | None, bytes]:
    request = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(256 * 1024)
            conn.receive_data(data)
            if not data and request is None:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _TooLarge()
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""
