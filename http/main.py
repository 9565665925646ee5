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


async def _node(cfg, notify_socket: str | None, attach=None) -> None:
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
                        stop.set()
                        return

                nursery.start_soon(watch_signals)
                host, port = await nursery.start(partial(serve, app, cfg.server, stop=stop,
                                                         observe=metrics.observe))
                shown = f"[{host}]" if ":" in host else host
                print(f"tessera: serving on http://{shown}:{port}", flush=True)
                systemd.notify(notify_socket, READY="1",
                               STATUS=f"serving on http://{shown}:{port}")
    finally:
        if engine is not None:
            with trio.CancelScope(shield=True):
                await engine.aclose()


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
    try:
        trio.run(_node, cfg, notify_socket, attach)
    except TesseraError as exc:
        print(f"tessera: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tessera: cannot serve on {server.host}:{server.port}: {exc}", file=sys.stderr)
        return 1
    return 0
