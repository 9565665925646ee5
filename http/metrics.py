# Prometheus metrics of one node: the HTTP observer (requests, latency, bytes, transfer
# throughput per route), the storage gauges read from the engine at scrape time, and the
# GET /metrics endpoint with its exposure policy.
# Invariants: one private CollectorRegistry per node (never prometheus_client's global one);
# labels are bounded: route *patterns*, never raw paths, and the methods of METHODS (any
# other is OTHER); storage figures are computed in a worker thread at most once per
# STATS_TTL seconds however often Prometheus scrapes. Hooks for parts built elsewhere are duck-typed:
# `engine.background.statistics()` (periodic processes), and any `add_source(fn)` returning
# {metric_name: (help, value | {label_tuple: value}, label_names)} -- a service the node
# attaches (replication: peer health, repair backlog, lag) plugs in by reporting, as
# started, an object with a `metrics_source` method of that shape (http/main.py).
from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from tessera.http.message import Response

log = logging.getLogger("tessera.metrics")

STATS_TTL = 5.0
# Modes of [api] metrics: see docs/configuration.md.
MODES = ("auto", "public", "admin", "off")
# Routes whose bodies are image data (their throughput is observed).
UPLOAD_ROUTES = frozenset({"/v2/images/{image_id}/file", "/v2/images/{image_id}/stage"})
TRANSFER_MIN_BYTES = 64 * 1024     # smaller transfers say nothing about throughput
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0)
_THROUGHPUT = tuple(float(x * 2 ** 20) for x in (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048))

Source = Callable[[], dict[str, tuple[str, Any, tuple[str, ...]]]]


class NodeMetrics:
    def __init__(self, engine: Any = None, *, clock: Callable[[], float] = time.monotonic):
        self.registry = CollectorRegistry(auto_describe=False)
        self.engine = engine
        self._clock = clock
        self._stats: dict[str, int] = {}
        self._stats_at = -STATS_TTL
        self._refreshing = False
        self._children: dict[tuple[str, str, int], tuple] = {}
        self._sources: list[Source] = []
        r = self.registry
        self.requests = Counter("tessera_http_requests", "HTTP requests answered",
                                ("method", "route", "status"), registry=r)
        self.latency = Histogram("tessera_http_request_duration_seconds",
                                 "Time from the request head to the last response byte",
                                 ("method", "route", "status"), buckets=_LATENCY,
                                 registry=r)
        self.bytes_in = Counter("tessera_http_received_bytes", "Request body bytes received",
                                ("route",), registry=r)
        self.bytes_out = Counter("tessera_http_sent_bytes", "Response body bytes sent",
                                 ("route",), registry=r)
        self.throughput = Histogram("tessera_image_transfer_bytes_per_second",
                                    "Image data throughput of one upload or download",
                                    ("direction",), buckets=_THROUGHPUT, registry=r)
        r.register(_StorageCollector(self))

    def add_source(self, source: Source) -> None:
        """Extra gauges computed at scrape time (the hook replication plugs into)."""
        self._sources.append(source)

    def observe(self, method: str, route: str, status: int, sent: int, received: int,
                seconds: float) -> None:
        if method not in METHODS:
            method = "OTHER"            # a client's invented methods never grow the series
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:            # labels() costs a lock and a lookup: once per key
            label, code = route or "unmatched", str(status)
            children = (self.requests.labels(method, label, code),
                        self.latency.labels(method, label, code),
                        self.bytes_in.labels(label), self.bytes_out.labels(label))
            children = self._children[key] = (*children, _cells(*children))
        count, latency, bytes_in, bytes_out, cells = children
        if cells is not None and seconds >= 0:
            count_cell, latency_sum, buckets, bounds, in_cell, out_cell = cells
            count_cell.inc(1)
            latency_sum.inc(seconds)
            buckets[bisect_left(bounds, seconds)].inc(1)
            if received:
                in_cell.inc(received)
            if sent:
                out_cell.inc(sent)
        else:
            count.inc()
            latency.observe(seconds)
            if received:
                bytes_in.inc(received)
            if sent:
                bytes_out.inc(sent)
        if seconds > 0 and status < 300:
            if route in UPLOAD_ROUTES and received >= TRANSFER_MIN_BYTES:
                self.throughput.labels("upload").observe(received / seconds)
            elif route == "/v2/images/{image_id}/file" and sent >= TRANSFER_MIN_BYTES:
                self.throughput.labels("download").observe(sent / seconds)

    def storage_stats(self) -> dict[str, int]:
        """The storage figures of the last refresh (the collector never scans itself)."""
        return self._stats

    async def refresh(self) -> None:
        """Recompute the storage figures if older than STATS_TTL: a scan of the chunk index,
        in a worker thread (it takes seconds on a large node and must not stall the event
        loop); concurrent scrapes share one refresh."""
        now = self._clock()
        if self.engine is None or self._refreshing or now - self._stats_at < STATS_TTL:
            return
        self._refreshing = True
        try:
            self._stats = dict(await trio.to_thread.run_sync(self.engine.chunks.stats))
        except Exception:      # a scrape never fails the node; the figures just age
            log.exception("storage statistics failed")
        finally:
            self._stats_at = self._clock()
            self._refreshing = False

    def render(self) -> Response:
        return Response(200, [("Content-Type", CONTENT_TYPE_LATEST)],
                        generate_latest(self.registry))

    async def scrape(self) -> Response:
        """GET /metrics: fresh enough storage figures, then the text format."""
        await self.refresh()
        return self.render()


def _cells(count: Any, latency: Any, bytes_in: Any, bytes_out: Any) -> tuple | None:
    """The value cells behind one key's children, for observe to increment directly: what
    Counter.inc and Histogram.observe do after their argument checks (the sum, then the
    first bucket whose bound is >= the amount). prometheus_client's private attributes,
    checked; None (the public methods) if they are not as expected."""
    try:
        cells = (count._value, latency._sum, list(latency._buckets),
                 list(latency._upper_bounds), bytes_in._value, bytes_out._value)
    except AttributeError:
        return None
    bounds = cells[3]
    if (len(cells[2]) != len(bounds) or bounds != sorted(bounds) or bounds[-1] != float("inf")
            or not all(callable(getattr(c, "inc", None))
                       for c in (cells[0], cells[1], cells[4], cells[5], *cells[2]))):
        return None
    return cells


class _StorageCollector:
    """Storage, cache and periodic-process gauges, computed when scraped."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        stats = self.metrics.storage_stats()
        for key, help_text in (
                ("images", "Images known to the node (any status)"),
                ("logical_bytes", "Bytes of image data as clients see them"),
                ("stored_bytes", "Bytes of unique chunks held (after deduplication)"),
                ("zero_bytes", "Bytes of zero runs stored as holes"),
                ("segment_bytes", "Bytes held in segment files"),
                ("segments", "Segment files"),
                ("chunks", "Resident chunks"),
                ("unreferenced_chunks", "Chunks no image references (awaiting the reaper)"),
                ("cache_bytes", "Bytes of cache-resident chunks")):
            if key in stats:
                yield GaugeMetricFamily(f"tessera_{key}", help_text, value=stats[key])
        if stats.get("stored_bytes"):
            yield GaugeMetricFamily("tessera_dedup_ratio",
                                    "logical_bytes / stored_bytes (higher saves more)",
                                    value=stats.get("logical_bytes", 0) / stats["stored_bytes"])
        yield from self._processes()
        for source in self.metrics._sources:
            try:
                yield from _families(source())
            except Exception:
                log.exception("metrics source %r failed", source)

    def _processes(self):
        """Periodic processes: engine.background.statistics()["periodic"] (rounds, failures,
        interval per process), or an engine's process_stats() of the same shape."""
        engine = self.metrics.engine
        background = getattr(engine, "background", None)
        try:
            if background is not None and hasattr(background, "statistics"):
                procs = background.statistics().get("periodic", {})
            elif hasattr(engine, "process_stats"):
                procs = engine.process_stats()
            else:
                return
        except Exception:
            log.exception("process statistics failed")
            return
        fields: dict[str, GaugeMetricFamily] = {}
        for name, values in sorted(procs.items()):
            for field, value in sorted(values.items()):
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                fam = fields.get(field)
                if fam is None:
                    fam = fields[field] = GaugeMetricFamily(
                        f"tessera_process_{field}", f"Periodic process {field}",
                        labels=("process",))
                fam.add_metric((name,), value)
        yield from fields.values()


def _families(doc: dict[str, tuple[str, Any, tuple[str, ...]]]):
    for name, (help_text, value, labels) in doc.items():
        if isinstance(value, dict):
            fam = GaugeMetricFamily(name, help_text, labels=labels)
            for key, v in value.items():
                fam.add_metric(tuple(key) if isinstance(key, tuple) else (key,), v)
            yield fam
        else:
            yield GaugeMetricFamily(name, help_text, value=value)


def exposure(mode: str, host: str, auth: str) -> str:
    """How GET /metrics is served: "public" (no credentials), "admin" (an authenticated admin
    caller) or "off" (404). "auto" is public on a loopback bind; elsewhere it needs an admin
    of a real auth mode, so an unauthenticated scrape of a public port sees nothing."""
    if mode not in MODES:
        raise ValueError(f"metrics must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        from tessera.http.main import is_loopback

        if is_loopback(host):
            return "public"
        return "off" if auth == "noauth" else "admin"
    if mode == "admin" and auth == "noauth":
        return "off"          # noauth makes every caller admin: that is a public scrape
    return mode
