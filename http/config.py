# Configuration of the public HTTP server: one frozen dataclass, built once by the composition
# root. Invariants: nothing here reads the environment; every limit has a finite default.
from __future__ import annotations

from dataclasses import dataclass


MAX_WORKERS = 64


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9292
    # auth mode: "noauth" | "trusted-headers" | "tokens"
    auth: str = "noauth"
    tokens_file: str | None = None
    # noauth on a non-loopback bind must be forced explicitly
    allow_insecure_noauth: bool = False
    max_header_bytes: int = 64 * 1024
    max_request_line: int = 8 * 1024
    max_json_body: int = 1024 * 1024
    header_timeout: float = 30.0
    idle_timeout: float = 60.0
    body_timeout: float = 300.0          # longest pause between two pieces of a body
    max_connections: int = 1024          # per process
    # processes answering the public port (http/workers.py): the main one holds the engine,
    # the others answer image reads (show, list, schemas) and hand it everything else
    workers: int = 1
    shutdown_grace: float = 10.0
    public_endpoint: str | None = None   # base URL used in absolute links (versions, Location)
    # GET /metrics: "auto" (public on a loopback bind, else admins of a real auth mode only),
    # "public", "admin" or "off"
    metrics: str = "auto"
    # oslo.middleware's disable_by_file_path: while this file exists /healthcheck answers 503
    healthcheck_disable_file: str | None = None
    # Glance's options (both off by default, OSSN-0065 / OSSN-0090): show `direct_url` and
    # `locations` in image JSON; show_multiple_locations also allows the legacy PATCH
    # operations on /locations.
    show_image_direct_url: bool = False
    show_multiple_locations: bool = False
