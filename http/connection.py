# One HTTP/1.1 connection: h11 on a trio stream, keep-alive, reading heads under the header
# and idle timeouts, building the Request, calling the application, rendering what it raises,
# sending the Response without copies, draining or lingering over unread bodies, the access
# log. Invariants: nothing here outlives its connection or touches another one; a response
# body goes out with Content-Length (never chunked); a body iterator that fails mid-stream
# aborts the connection (reset) with nothing more sent; tracebacks are logged, never sent.
from __future__ import annotations

import logging
import os
import random
import re
import socket
import struct
import time
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

import h11
import trio

from tessera import logs
from tessera.engine.errors import TesseraError
from tessera.http.accesslog import log_access
from tessera.http.body import RequestBody, Transport
from tessera.http.bodysend import BatchSender, batch_reader
from tessera.http.errors import TITLES, BodyIncomplete, HTTPError, error_response, render_error
from tessera.http.head import response_event
from tessera.http.sockio import next_buffered, recv_head, send_small
from tessera.http.message import Headers, Request, Response
from tessera.http.workers import HandOff

log = logging.getLogger("tessera.http")

HEAD_BUFFER = 16 * 1024          # per-connection receive buffer for request heads
DRAIN_CAP = 256 * 1024           # unread request body we swallow to keep a connection alive
LINGER = 2.0                     # seconds we read and discard before closing on unread input
SMALL_BODY = 64 * 1024           # bodies up to this size go out in one send with the head
_REQUEST_ID = re.compile(r"req-[0-9a-f-]{36}")
_BLANK_LINE = re.compile(rb"\n\r?\n")     # the end of a head, as h11 finds it
_OBS_FOLD = re.compile(rb"\n[ \t]")       # a header line continued on the next line
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_REASONS.update({k: v.encode() for k, v in TITLES.items()})
CONN_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


_INF = float("inf")
_rng = random.Random(os.urandom(32))


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_request_id() -> str:
    """`req-` + a random version-4 UUID (a correlation id, not a secret: a seeded PRNG
    instead of os.urandom per request, which costs a system call)."""
    h = "%032x" % _rng.getrandbits(128)
    return f"req-{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


class Abort(Exception):
    """The response could not be completed: close the connection now, send nothing more."""


class Connection:
    __slots__ = ("server", "cfg", "transport", "h11", "head_buf", "scope", "deadline", "idle",
                 "client", "client_str", "view")

    def __init__(self, server, stream: trio.abc.Stream) -> None:
        self.server = server
        self.cfg = server.cfg
        self.transport = Transport(stream)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.cfg.max_header_bytes)
        self.head_buf = bytearray(HEAD_BUFFER)
        self.view = memoryview(self.head_buf)
        # One cancel scope for the connection's life, cancelled by the server's reaper once
        # `deadline` passes: header/idle timeout while waiting for a head, body_timeout per
        # response piece sent, none while the handler runs. Firing it closes the connection.
        self.scope = trio.CancelScope()
        self.deadline = _INF
        self.idle = False
        sock = self.transport.sock
        try:
            peer = sock.getpeername() if sock is not None else ("", 0)
        except OSError:
            peer = ("", 0)
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else (str(peer), 0)
        self.client_str = f"{self.client[0]}:{self.client[1]}"

    def wake_if_idle(self) -> None:
        if self.idle:
            self.scope.cancel()

    async def run(self) -> None:
        abort = False
        scope = self.scope
        try:
            with scope:
                first = True
                while True:
                    event = await self._read_head(first)
                    first = False
                    if event is None:
                        return
                    self.deadline = _INF
                    if not await self._serve_one(event):
                        return
                    conn = self.h11
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
        except Abort:
            abort = True
        except CONN_ERRORS:
            pass
        except Exception:           # a bug here must not take other connections down
            log.exception("connection handler failed")
            abort = True
        finally:
            await self._close(abort)

    async def _close(self, abort: bool) -> None:
        sock = self.transport.sock
        if abort and sock is not None:
            try:   # reset, so the client sees an error rather than a clean end of stream
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        with trio.CancelScope(shield=True):
            try:
                await self.transport.stream.aclose()
            except CONN_ERRORS:
                pass

    # -- reading a head -------------------------------------------------------------------

    async def _read_head(self, first: bool) -> h11.Request | None:
        """The next request's head; None when the connection should just close."""
        conn = self.h11
        if not _nothing_received(conn):
            try:
                _refuse_obs_fold(conn)
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._send_protocol_error(exc.error_status_hint)
                return None
            if event is not h11.NEED_DATA:
                if type(event) is h11.Request:
                    await next_buffered()       # pipelined: still one yield per request
                return self._head_event(event)
        if self.server.closing:
            return None
        cfg = self.cfg
        buf = self.head_buf
        view = self.view
        transport = self.transport
        line_seen = 0          # bytes of the request line so far; -1 once its end is seen
        switched = first       # keep-alive: the header timeout starts with the first bytes
        self.deadline = trio.current_time() + (
            cfg.header_timeout if first else cfg.idle_timeout)
        self.idle = True
        try:
            n = await recv_head(transport, view, HEAD_BUFFER)
        finally:
            self.idle = False
        while True:
            if n == 0:
                return None
            if line_seen >= 0:
                end = buf.find(b"\n", 0, n)
                length = line_seen + (n if end < 0 else end)
                if length > cfg.max_request_line:
                    await self._send_protocol_error(414)
                    return None
                line_seen = length if end < 0 else -1
            conn.receive_data(view[:n])
            try:
                _refuse_obs_fold(conn)
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._send_protocol_error(exc.error_status_hint)
                return None
            if event is not h11.NEED_DATA:
                return self._head_event(event)
            if not switched:
                switched = True
                self.deadline = trio.current_time() + cfg.header_timeout
            n = await recv_head(transport, view, HEAD_BUFFER)

    def _head_event(self, event) -> h11.Request | None:
        if type(event) is h11.Request:
            return event
        return None           # ConnectionClosed (or nothing useful): close

    async def _send_protocol_error(self, status: int) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        resp = render_error(status, "", None)
        try:
            await self._send_simple(resp, "", close=True)
        except (h11.LocalProtocolError, *CONN_ERRORS):
            return
        await self._linger()     # a client still sending its head reads the error, no reset

    async def _send_simple(self, resp: Response, request_id: str, close: bool) -> None:
        headers = [(k.encode("ascii"), v.encode("latin-1")) for k, v in resp.headers]
        body = resp.body
        headers.append((b"Content-Length", str(len(body)).encode()))
        if request_id:
            headers.append((b"x-openstack-request-id", request_id.encode()))
        if close:
            headers.append((b"Connection", b"close"))
        conn = self.h11
        data = conn.send(h11.Response(status_code=resp.status, headers=headers,
                                      reason=_REASONS.get(resp.status, b"")))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await self.transport.send_all(data)

    # -- one request ----------------------------------------------------------------------

    async def _serve_one(self, event: h11.Request) -> bool:
        """Handle one request; False when the connection must close."""
        started = time.perf_counter()
        cfg = self.cfg
        conn = self.h11
        method = event.method.decode("ascii")
        target = event.target.decode("latin-1")
        # One pass over the head: decode, measure (h11 bounds only an incomplete head; one
        # that arrived whole is measured here), and pick the headers the server itself uses.
        items = []
        size = len(target)
        te = cl = host = rid = None
        full = getattr(event.headers, "_full_items", None)   # h11's (raw, lower, value)
        if type(full) is not list:
            full = [(k, k, v) for k, v in event.headers]
        for _, k, v in full:
            name = k.decode("latin-1")
            value = v.decode("latin-1")
            items.append((name, value))
            size += len(name) + len(value) + 4
            if name == "host":
                host = value
            elif name == "content-length":
                cl = value
            elif name == "transfer-encoding":
                te = value
            elif name == "x-openstack-request-id":
                rid = value
        headers = Headers(tuple(items))
        if rid is None or _REQUEST_ID.fullmatch(rid) is None:
            rid = new_request_id()
        logs.request_id.set(rid)     # log lines of the work this request causes carry it
        if size > cfg.max_header_bytes:
            await self._send_simple(render_error(431, "", None), rid, True)
            self._log(rid, method, target, "", 431, 0, 0, started)
            await self._linger()
            return False

        if te is not None and cl is not None:    # request smuggling vector: refuse
            await self._send_simple(render_error(400, "", headers.get("accept")), rid, True)
            self._log(rid, method, target, "", 400, 0, 0, started)
            await self._linger()
            return False

        path, _, qs = target.partition("?")
        if "%" in path:
            path = unquote(path, errors="replace")
        query = parse_qsl(qs, keep_blank_values=True) if qs else []
        if cl is not None:
            length = int(cl)
            present = length > 0
        else:
            length = None
            present = te is not None and method in ("POST", "PUT", "PATCH")
        body = RequestBody(conn, self.transport, self.server.pool, cfg.body_timeout, length,
                           present)
        host_url = cfg.public_endpoint.rstrip("/") if cfg.public_endpoint else (
            "http://" + host if host else self.server.default_host_url)
        request = Request(method, target, path, query, headers, body, rid, self.client,
                          {}, host_url)
        try:
            return await self._respond(request, body, started)
        except HandOff:              # an API worker's request for the main process
            await self.server.handoff.give(self.transport.sock, event, conn)
            return False
        finally:
            body.release()

    async def _respond(self, request: Request, body: RequestBody, started: float) -> bool:
        try:
            resp = await self.server.app(request)
        except HandOff:
            raise
        except (TesseraError, HTTPError) as exc:
            resp = error_response(exc, request.headers.get("accept"), method=request.method,
                                  content_type=request.headers.get("content-type") or "")
        except BodyIncomplete as exc:
            status = exc.status
            if status is not None and self.h11.our_state is h11.SEND_RESPONSE:
                resp = render_error(status, "", request.headers.get("accept"))
                try:
                    await self._send_simple(resp, request.request_id, True)
                except (h11.LocalProtocolError, *CONN_ERRORS):
                    pass
            self._log(request.request_id, request.method, request.target, request.route,
                      status or 0, 0, body.received, started)
            return False
        except Exception:
            log.exception("unhandled error in %s %s (%s)", request.method, request.target,
                          request.request_id)
            resp = render_error(500, "", request.headers.get("accept"))
        conn = self.h11
        # A client still waiting for 100-continue never sent its body: close after replying.
        close = self.server.closing or conn.they_are_waiting_for_100_continue
        try:
            sent = await self._send_response(request, resp, close)
        except Abort:
            self._log(request.request_id, request.method, request.target, request.route,
                      resp.status, -1, body.received, started)
            raise
        self._log(request.request_id, request.method, request.target, request.route,
                  resp.status, sent, body.received, started)
        if not body.done and conn.their_state is h11.SEND_BODY and not body.finish_if_empty():
            if close or not await self._drain(body):
                await self._linger()
                return False
        return not close

    async def _send_response(self, request: Request, resp: Response, close: bool) -> int:
        """Send the response; the number of body bytes sent. Raises Abort mid-stream."""
        try:
            event, body, is_bytes, length = self._head(request, resp, close)
        except (UnicodeError, h11.LocalProtocolError, AttributeError, TypeError, ValueError):
            log.exception("invalid response from %s %s (%s)", request.method, request.target,
                          request.request_id)
            await _close_iterable(resp.body)
            resp = render_error(500, "", request.headers.get("accept"))
            event, body, is_bytes, length = self._head(request, resp, close)
        conn = self.h11
        status = resp.status
        head = conn.send(event)
        send_all = self.transport.send_all
        # A client that stops reading for body_timeout is cut off (by the reaper).
        timeout = self.cfg.body_timeout
        self.deadline = trio.current_time() + timeout
        if request.method == "HEAD" or status == 204 or status == 304:
            if not is_bytes:
                await _close_iterable(body)
            await send_small(self.transport, head + conn.send(h11.EndOfMessage()))
            return 0
        if is_bytes:
            if length <= SMALL_BODY:
                conn.send_with_data_passthrough(h11.Data(data=body))
                conn.send(h11.EndOfMessage())
                await send_small(self.transport, head + body)
            else:
                await send_all(head)
                for part in conn.send_with_data_passthrough(h11.Data(data=body)):
                    await send_all(part)
                conn.send(h11.EndOfMessage())
            return length
        await send_all(head)
        sent = 0
        finished = False
        reader = batch_reader(body) if self.transport.fd >= 0 else None
        try:
            if reader is not None:       # a download: prepared and sent by worker threads
                sender = BatchSender(reader, self.transport.sock)
                try:
                    await sender.send(body, conn, send_all, self._touch)
                finally:
                    sent = sender.sent
            else:
                async for piece in body:
                    self.deadline = trio.current_time() + timeout
                    for part in conn.send_with_data_passthrough(h11.Data(data=piece)):
                        await send_all(part)
                    sent += len(piece)
            finished = True
            conn.send(h11.EndOfMessage())
        except CONN_ERRORS:
            raise
        except Exception as exc:
            if isinstance(exc, TesseraError):
                log.error("aborted response %s %s (%s) after %d bytes: %s: %s", request.method,
                          request.target, request.request_id, sent, type(exc).__name__, exc)
            else:
                log.exception("aborted response %s %s (%s) after %d bytes", request.method,
                              request.target, request.request_id, sent)
            raise Abort() from None
        finally:
            if not finished:      # cut off: stop the body's work ahead (a download's reads)
                await _close_iterable(body)
        return sent

    def _touch(self) -> None:
        """The body goes on: the client has body_timeout again to take the next piece."""
        self.deadline = trio.current_time() + self.cfg.body_timeout

    def _head(self, request: Request, resp: Response, close: bool):
        """The h11 Response event (h11 validates it here, before any state changes), the
        body, whether it is bytes-like, and its length."""
        body = resp.body
        is_bytes = isinstance(body, (bytes, bytearray, memoryview))
        length = len(body) if is_bytes else resp.content_length
        if length is None:
            raise ValueError("an iterable response body needs content_length")
        event = response_event(resp.status, resp.headers, length, request.request_id, close,
                               _REASONS.get(resp.status, b""))
        return event, body, is_bytes, length

    async def _drain(self, body: RequestBody) -> bool:
        """Swallow a small unread body so the connection can be reused; False if too big."""
        if body.length is not None and body.length - body.received > DRAIN_CAP:
            return False
        budget = DRAIN_CAP
        with trio.move_on_after(min(LINGER, self.cfg.body_timeout)):
            try:
                while budget > 0:
                    piece = await body.next_piece()
                    if piece is None:
                        return True
                    budget -= len(piece)
            except BodyIncomplete:
                return False
        return False

    async def _linger(self) -> None:
        """Half-close and discard input for a moment, so a client still sending its body reads
        our response instead of a reset."""
        sock = self.transport.sock
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        buf = self.head_buf
        with trio.move_on_after(min(LINGER, self.cfg.body_timeout)):
            try:
                while await self.transport.recv_into(buf, len(buf)):
                    pass
            except CONN_ERRORS:
                pass

    def _log(self, rid: str, method: str, target: str, route: str, status: int, sent: int,
             received: int, started: float) -> None:
        """The access log line (sent = -1: the response was cut off) and the observer."""
        seconds = time.perf_counter() - started
        observe = self.server.observe
        if observe is not None:
            observe(method, route, status, max(sent, 0), received, seconds)
        log_access(rid, self.client_str, route, method, target, status, sent, received, seconds)


def _refuse_obs_fold(conn: h11.Connection) -> None:
    """A complete head waiting in h11's buffer with an obsolete line folding is refused
    (RFC 9112 5.2 allows 400 or unfolding; h11 unfolds, and a proxy in front may not, which
    is a smuggling shape). Reads h11's private buffer, checked by type like body.py."""
    data = getattr(getattr(conn, "_receive_buffer", None), "_data", None)
    if type(data) is not bytearray:
        return
    if b"\n " not in data and b"\n\t" not in data:      # no folded line anywhere
        return
    if conn.their_state is not h11.IDLE:
        return
    end = _BLANK_LINE.search(data)
    if end is not None and _OBS_FOLD.search(data, 0, end.start()) is not None:
        raise h11.RemoteProtocolError("obsolete line folding in the head",
                                      error_status_hint=400)


def _nothing_received(conn: h11.Connection) -> bool:
    """True when h11 would surely answer NEED_DATA: waiting for a request head with nothing
    buffered and the stream not closed (h11's private buffer, checked by type; anything
    unexpected answers False and h11 is asked)."""
    buf = getattr(conn, "_receive_buffer", None)
    return (type(getattr(buf, "_data", None)) is bytearray and not buf._data
            and getattr(conn, "_receive_buffer_closed", True) is False
            and conn.their_state is h11.IDLE)


async def _close_iterable(body) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.exception("closing an unsent response body failed")
