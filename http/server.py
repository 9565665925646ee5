# The HTTP/1.1 server: listening, accepting, bounding concurrent connections, sweeping
# connection deadlines, graceful shutdown. One trio task per connection (connection.py).
# Invariants: one bad client (malformed, slow, disconnecting, crashing its handler) never
# affects another connection; past cfg.max_connections the accept loop pauses, so new
# connections wait in the kernel's listen backlog until a slot frees; after `stop`, no new
# connection is accepted, idle ones close, in-flight requests get cfg.shutdown_grace.
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from tessera.http.body import BufferPool
from tessera.http.config import ServerConfig
from tessera.http.connection import Connection
from tessera.http.message import Request, Response
from tessera.http.workers import announce_ready, intake

App = Callable[[Request], Awaitable[Response]]
# observe(method, route, status, bytes_sent, bytes_received, seconds) after each request.
Observer = Callable[[str, str, int, int, int, float], None]

log = logging.getLogger("tessera.http")


class _Server:
    def __init__(self, app: App, cfg: ServerConfig, observe: Observer | None = None) -> None:
        self.app = app
        self.cfg = cfg
        self.observe = observe
        self.pool = BufferPool()
        self.slots = trio.Semaphore(cfg.max_connections)
        self.conns: set[Connection] = set()
        self.closing = False
        self.drained = trio.Event()
        self.default_host_url = ""
        self.handoff = None           # an API worker's channel to the main process
        self.reap_interval = max(0.01, min(0.25, cfg.header_timeout / 4, cfg.idle_timeout / 4,
                                           cfg.body_timeout / 4))

    async def reaper(self) -> None:
        """Cancel connections past their deadline. Connections only store a float deadline
        (moving a trio deadline twice per request costs more than this sweep)."""
        while True:
            await trio.sleep(self.reap_interval)
            now = trio.current_time()
            for conn in self.conns:
                if conn.deadline < now:
                    conn.scope.cancel()

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            await self.slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:          # EMFILE and friends: back off, keep serving
                self.slots.release()
                log.warning("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            except BaseException:
                self.slots.release()
                raise
            nursery.start_soon(self.handle, stream)

    async def handle(self, stream: trio.abc.Stream, received: bytes = b"") -> None:
        """Serve one connection (`received`: bytes already read from it, by the API worker
        that handed it over)."""
        conn = Connection(self, stream)
        if received:
            conn.h11.receive_data(received)
        self.conns.add(conn)
        try:
            await conn.run()
        finally:
            self.conns.discard(conn)
            self.slots.release()
            if self.closing and not self.conns:
                self.drained.set()

    async def adopt(self, nursery: trio.Nursery, stream: trio.abc.Stream,
                    received: bytes) -> None:
        """Serve a connection an API worker handed over (waiting for a slot, as accept)."""
        await self.slots.acquire()
        nursery.start_soon(self.handle, stream, received)

    def begin_shutdown(self) -> None:
        self.closing = True
        for conn in list(self.conns):
            conn.wake_if_idle()
        if not self.conns:
            self.drained.set()


async def serve(app: App, cfg: ServerConfig, *, task_status=trio.TASK_STATUS_IGNORED,
                stop: trio.Event | None = None, observe: Observer | None = None,
                sockets: list | None = None, workers: list | None = None,
                handoff: Any = None) -> None:
    """Serve `app` on cfg.host:cfg.port until cancelled, or until `stop` is set: then stop
    accepting, close idle connections, let in-flight requests finish for up to
    cfg.shutdown_grace seconds, cancel the rest and return. Reports (host, port) through
    task_status once listening (port 0 picks a free port). `observe` sees every request.
    With API workers (http/workers.py): `sockets` are listening sockets made beforehand;
    the main process passes its `workers` (their connections handed over are served here),
    a worker its `handoff` channel."""
    if sockets is not None:
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
    else:
        listeners = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
    server = _Server(app, cfg, observe)
    server.handoff = handoff
    sockname = listeners[0].socket.getsockname()
    host, port = sockname[0], sockname[1]
    server.default_host_url = f"http://{host}:{port}" if ":" not in host \
        else f"http://[{host}]:{port}"
    try:
        async with trio.open_nursery() as connections:
            connections.start_soon(server.reaper)
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(server.accept_loop, listener, connections)
                for worker in workers or ():
                    accepting.start_soon(intake, worker, partial(server.adopt, connections),
                                         observe)
                announce_ready(workers or [])
                task_status.started((host, port))
                if stop is None:
                    await trio.sleep_forever()
                await stop.wait()
                accepting.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            server.begin_shutdown()
            with trio.move_on_after(cfg.shutdown_grace):
                await server.drained.wait()
            connections.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()


async def serve_stream(app: App, cfg: ServerConfig, stream: trio.abc.Stream) -> None:
    """Serve one already-connected stream until it closes (tests drive in-memory streams)."""
    server = _Server(app, cfg)
    await server.slots.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.reaper)
        await server.handle(stream)
        nursery.cancel_scope.cancel()
