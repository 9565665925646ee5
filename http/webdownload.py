# web-download's server-side request (glance-api.md 1.6): the URI filter (Glance's
# [import_filtering_opts] plus address classes), resolving the host once, and a streamed GET
# to the pinned address (tessera.http.outbound). Image locations (tessera.http.origin) use
# the same filter and pinning.
# Invariants:
# - check_uri() is pure (no I/O): scheme, host and port rules. pin() resolves the host ONCE;
#   every later connection goes to an address it returned, tried in the resolver's order
#   (no DNS rebinding: nothing is resolved again). An address
#   that is loopback, link-local, private, multicast, reserved or unspecified is refused
#   unless the operator listed the host (name or address) in allowed_hosts.
# - Redirects are not followed (a 3xx fails the task): a redirect would be a second,
#   unfiltered request.
# - The fetch is streamed piece by piece (never buffered whole), capped in bytes and in time
#   (connect, each read, and the whole transfer); failures are engine errors
#   (Unavailable, TooLarge) so the import flow records them.
from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

from tessera.engine.errors import TooLarge, Unavailable
from tessera.http import outbound
from tessera.http.outbound import DEFAULT_PORTS


@dataclass(frozen=True)
class ImportConfig:
    """The [import] table: enabled methods and web-download's filter and caps."""
    enabled_methods: tuple[str, ...] = ("glance-direct", "web-download", "copy-image")
    allowed_schemes: tuple[str, ...] = ("http", "https")
    disallowed_schemes: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    disallowed_hosts: tuple[str, ...] = ()
    allowed_ports: tuple[int, ...] = (80, 443)
    disallowed_ports: tuple[int, ...] = ()
    max_download_bytes: int | None = None       # None: the engine's image_size_cap
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    download_timeout: float = 3600.0


@dataclass(frozen=True)
class Target:
    uri: str
    scheme: str
    host: str
    port: int
    path: str


def check_uri(uri: object, cfg: ImportConfig) -> Target | None:
    """The parsed target if the URI passes the scheme/host/port rules, else None (Glance's
    whitelist-wins semantics: a non-empty allow list makes the deny list moot)."""
    if not isinstance(uri, str) or not uri:
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in DEFAULT_PORTS:
        return None
    if (cfg.allowed_schemes and scheme not in cfg.allowed_schemes) or (
            not cfg.allowed_schemes and scheme in cfg.disallowed_schemes):
        return None
    if not host or (cfg.allowed_hosts and host not in cfg.allowed_hosts) or (
            not cfg.allowed_hosts and host in cfg.disallowed_hosts):
        return None
    port = port if port is not None else DEFAULT_PORTS[scheme]
    if (cfg.allowed_ports and port not in cfg.allowed_ports) or (
            not cfg.allowed_ports and port in cfg.disallowed_ports):
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(uri, scheme, host, port, path)


def address_allowed(address: str, host: str, cfg: ImportConfig) -> bool:
    """May the fetch connect to `address` (resolved from `host`)?"""
    if host in cfg.allowed_hosts or address in cfg.allowed_hosts:
        return True
    if address in cfg.disallowed_hosts:
        return False
    ip = ipaddress.ip_address(address)
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


async def pin(target: Target, cfg: ImportConfig) -> tuple[str, ...] | None:
    """Resolve once: the allowed addresses to connect to, in the resolver's order; None when
    every address is refused (one refused address refuses the name: a name that also
    resolves to a private address is not fetched). Unavailable when it does not resolve."""
    try:
        infos = await trio.socket.getaddrinfo(target.host, target.port,
                                              type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unavailable(f"cannot resolve {target.host}: {exc}") from None
    addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
    if not addresses or not all(address_allowed(a, target.host, cfg) for a in addresses):
        return None
    return addresses


def opener(target: Target, address: tuple[str, ...] | None, cfg: ImportConfig,
           size_cap: int):
    """The engine's source opener for this import: fetch() bound to the pinned addresses."""
    cap = size_cap if cfg.max_download_bytes is None else min(size_cap, cfg.max_download_bytes)

    def open_source() -> AsyncIterator[bytes]:
        return fetch(target, address, cfg, cap)

    return open_source


async def fetch(target: Target, address: tuple[str, ...] | None, cfg: ImportConfig,
                cap: int) -> AsyncIterator[bytes]:
    if address is None:
        raise Unavailable(f"cannot resolve {target.host} ({target.uri})")
    async with outbound.get(target, address, cfg, agent="tessera-web-download") as reply:
        if reply.status != 200:
            raise Unavailable(f"{target.uri} answered HTTP {reply.status} "
                              f"(redirects are not followed)")
        if reply.length is not None and reply.length > cap:
            raise TooLarge(f"{target.uri} announced {reply.length} bytes, over the "
                           f"size cap of {cap} bytes")
        received = 0
        async for piece in reply.body():
            received += len(piece)
            if received > cap:
                raise TooLarge(f"{target.uri} sent more than the size cap of {cap} bytes")
            yield piece
