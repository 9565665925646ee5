# Running a node: logging, the engine, the application and the HTTP server in one trio run,
# and process-level behaviour (signals, graceful shutdown, exit codes). Invariants: noauth is
# never served on a non-loopback address unless explicitly forced; SIGTERM/SIGINT stop
# accepting, let in-flight requests finish for up to shutdown_grace, then close the engine.
# Exit status: 0 after a clean shutdown, 1 on a reported failure, 2 on a refused setup.
# Readiness: with a NOTIFY_SOCKET (passed in by cli.py), READY=1 is sent once the listener is
# bound and the engine open, STOPPING=1 when shutdown begins (systemd Type=notify).
from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
from contextlib import asynccontextmanager
from functools import partial

import trio

from tessera import logs, systemd
from tessera.engine.errors import TesseraError
from tessera.http.config import ServerConfig
from tessera.http.message import Request, Response
from tessera.http.routing import Route, Router
from tessera.http.server import serve

log = logging.getLogger("tessera")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fallback_app(engine, cfg: ServerConfig):
    """Used until tessera.http.api exists: health check and a versions document only."""

    async def healthcheck(request: Request) -> Response:
        return Response(200, [("Content-Type", "text/plain")], b"OK")

    async def versions(request: Request) -> Response:
        doc = {"versions": [{"id": "v2.17", "status": "CURRENT", "links": [
            {"rel": "self", "href": request.host_url + "/v2/"}]}]}
        return Response(200, [("Content-Type", "application/json")], json.dumps(doc).encode())

    return Router([Route("GET", "/healthcheck", healthcheck),
                   Route("GET", "/versions", versions, body_reject=True)])


def _missing(exc: ModuleNotFoundError, name: str) -> bool:
    return exc.name == name


async def _open_engine(cfg):
    try:
        from tessera.engine.engine import Engine
    except ModuleNotFoundError as exc:
        if not _missing(exc, "tessera.engine.engine"):
            raise
        log.warning("tessera.engine.engine is not available: serving without an engine")
        return None
    return await Engine.open(cfg.engine)


def _build_app(engine, cfg: ServerConfig, metrics, imports=None):
    try:
        from tessera.http.api import build_app
    except ModuleNotFoundError as exc:
        if not _missing(exc, "tessera.http.api"):
            raise
        log.warning("tessera.http.api is not available: serving the health check only")
        return fallback_app(engine, cfg)
    return build_app(engine, cfg, metrics, imports=imports)


@asynccontextmanager
async def _background(engine, attach=None, metrics=None):
    """The engine's background runner (import flows, periodic processes) and the services
    the composition root attaches (`attach(engine, task_status=...)`, e.g. replication) for
    the node's lifetime; cancelled once the server has stopped. If what `attach` reports as
    started has a `metrics_source` (see tessera.http.metrics), /metrics shows its figures."""
    async with trio.open_nursery() as nursery:
        if engine is not None:
            await nursery.start(engine.run_background)
            if attach is not None:
                started = await nursery.start(attach, engine)
                source = getattr(started, "metrics_source", None)
                if metrics is not None and callable(source):
                    metrics.add_source(source)
        yield
        nursery.cancel_scope.cancel()


async def _node(cfg, notify_socket: str | None, attach=None, sockets=None,
                workers=()) -> None:
    from tessera.http.metrics import NodeMetrics

    engine = await _open_engine(cfg)
    try:
        metrics = NodeMetrics(engine)
        app = _build_app(engine, cfg.server, metrics, getattr(cfg, "imports", None))
        stop = trio.Event()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with _background(engine, attach, metrics), trio.open_nursery() as nursery:

                async def watch_signals() -> None:
                    async for signum in signals:
                        log.info("signal %d: shutting down (grace %.1fs)", signum,
                                 cfg.server.shutdown_grace)
                        systemd.notify(notify_socket, STOPPING="1")
                        for worker in workers:
                            worker.terminate()
                        stop.set()
                        return

                nursery.start_soon(watch_signals)
                host, port = await nursery.start(partial(
                    serve, app, cfg.server, stop=stop, observe=metrics.observe,
                    sockets=sockets, workers=list(workers)))
                shown = f"[{host}]" if ":" in host else host
                print(f"tessera: serving on http://{shown}:{port}", flush=True)
                systemd.notify(notify_socket, READY="1",
                               STATUS=f"serving on http://{shown}:{port}")
    finally:
        if engine is not None:
            with trio.CancelScope(shield=True):
                await engine.aclose()


async def _worker(cfg, number: int, listener, channel) -> int:
    """An API worker process (http/workers.py): the read-only routes over the index opened
    read-only, once the main process has opened the engine; stops on SIGTERM/SIGINT or
    when the main process is gone."""
    from tessera.engine.index import Index
    from tessera.engine.reads import ImageReads
    from tessera.engine.stores import Stores, check_configs
    from tessera.http.api import build_app
    from tessera.http.workers import Handoff

    handoff = Handoff(channel)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        if not await handoff.wait_ready():
            return 1
        eng = cfg.engine
        index = Index.open_reader(eng.index_dir, map_size=eng.map_size)
        try:
            stores = Stores(eng, None, check_configs(tuple(eng.stores)), {})
            app = build_app(ImageReads(eng, index, stores), cfg.server,
                            imports=getattr(cfg, "imports", None), worker=True)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async def until(wait) -> None:
                        await wait()
                        inner.cancel_scope.cancel()

                    async def signalled() -> None:
                        async for _ in signals:
                            return

                    async with trio.open_nursery() as inner:
                        inner.start_soon(until, handoff.wait_closed)
                        inner.start_soon(until, signalled)
                    stop.set()

                nursery.start_soon(watch)
                nursery.start_soon(handoff.send_observations)
                log.info("API worker %d serving (pid %d)", number, os.getpid())
                await serve(app, cfg.server, stop=stop, sockets=[listener], handoff=handoff,
                            observe=handoff.observe)
                nursery.cancel_scope.cancel()
        finally:
            index.close()
    return 0


def _start_workers(cfg) -> tuple[list, list]:
    """([api] workers > 1) the main process's listening socket and the forked workers,
    each with its own listener on the same port; before anything else runs here."""
    from tessera.http.workers import fork_workers, listening_sockets

    server = cfg.server
    sockets = listening_sockets(server.host, server.port, server.workers)
    workers = fork_workers(sockets, lambda n, s, c: trio.run(_worker, cfg, n, s, c))
    return sockets[:1], workers


def run_node(cfg, *, notify_socket: str | None = None, attach=None) -> int:
    """Serve the node described by `cfg` (tessera.config.Config) until SIGTERM/SIGINT;
    `notify_socket`: systemd's NOTIFY_SOCKET, if any."""
    # The event loop does I/O; worker threads hash, write and commit. With the default 5 ms
    # GIL switch interval a thread in Python code holds up every socket wake-up of the loop
    # that long; 0.5 ms keeps the loop responsive (cold cluster pulls: ~+20% throughput).
    sys.setswitchinterval(0.0005)
    logs.setup_logging(getattr(cfg, "log", logs.LogConfig()))
    server = cfg.server
    if server.auth == "noauth" and not is_loopback(server.host) \
            and not server.allow_insecure_noauth:
        print(f"tessera: refusing to serve with auth = \"noauth\" on {server.host}: every "
              "request would be admin. Bind to a loopback address, choose another auth mode, "
              "or set allow_insecure_noauth = true in [api].", file=sys.stderr)
        return 2
    sockets, workers = None, []
    try:
        if server.workers > 1:
            sockets, workers = _start_workers(cfg)
        trio.run(_node, cfg, notify_socket, attach, sockets, workers)
    except TesseraError as exc:
        print(f"tessera: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tessera: cannot serve on {server.host}:{server.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        for worker in workers:          # stopped with the node (already told on a signal)
            worker.terminate()
        for worker in workers:
            worker.reap(server.shutdown_grace + 5)
    return 0
