# web-download's server-side request (glance-api.md 1.6): the URI filter (Glance's
# [import_filtering_opts] plus address classes), resolving the host once, and a streamed GET
# to the pinned address through h11.
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
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

from tessera.engine.errors import TooLarge, Unavailable

DEFAULT_PORTS = {"http": 80, "https": 443}
READ_SIZE = 256 * 1024


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
    deadline = time.monotonic() + cfg.download_timeout
    stream = await _connect(target, address, cfg)
    try:
        conn = h11.Connection(h11.CLIENT)
        host_header = target.host if target.port == DEFAULT_PORTS[target.scheme] \
            else f"{target.host}:{target.port}"
        request = h11.Request(method="GET", target=target.path, headers=[
            ("Host", host_header), ("User-Agent", "tessera-web-download"),
            ("Accept", "*/*"), ("Connection", "close")])
        await _send(stream, conn.send(request) + conn.send(h11.EndOfMessage()), cfg)
        received = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await _receive(stream, cfg, deadline, target))
                continue
            if isinstance(event, h11.Response):
                if event.status_code != 200:
                    raise Unavailable(f"{target.uri} answered HTTP {event.status_code} "
                                      f"(redirects are not followed)")
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit() and int(length) > cap:
                    raise TooLarge(f"{target.uri} announced {int(length)} bytes, over the "
                                   f"size cap of {cap} bytes")
            elif isinstance(event, h11.Data):
                received += len(event.data)
                if received > cap:
                    raise TooLarge(f"{target.uri} sent more than the size cap of {cap} "
                                   f"bytes")
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return
    except h11.RemoteProtocolError as exc:
        raise Unavailable(f"{target.uri}: bad HTTP response ({exc})") from None
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _connect(target: Target, addresses: tuple[str, ...],
                   cfg: ImportConfig) -> trio.abc.Stream:
    try:
        with trio.fail_after(cfg.connect_timeout):
            stream: trio.abc.Stream | None = None
            for address in addresses:           # the pinned ones only, in order
                try:
                    stream = await trio.open_tcp_stream(address, target.port)
                    break
                except OSError:
                    if address == addresses[-1]:
                        raise
            if target.scheme == "https":
                assert stream is not None
                tls = trio.SSLStream(stream, ssl.create_default_context(),
                                     server_hostname=target.host, https_compatible=True)
                await tls.do_handshake()
                stream = tls
    except trio.TooSlowError:
        raise Unavailable(f"timed out connecting to {target.uri}") from None
    except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
        raise Unavailable(f"cannot reach {target.uri}: {exc}") from None
    return stream


async def _send(stream: trio.abc.Stream, data: bytes, cfg: ImportConfig) -> None:
    try:
        with trio.fail_after(cfg.read_timeout):
            await stream.send_all(data)
    except (trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
        raise Unavailable(f"cannot send the request: {exc!r}") from None


async def _receive(stream: trio.abc.Stream, cfg: ImportConfig, deadline: float,
                   target: Target) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise Unavailable(f"{target.uri}: the download took longer than "
                          f"{cfg.download_timeout:g} s")
    try:
        with trio.fail_after(min(cfg.read_timeout, left)):
            return await stream.receive_some(READ_SIZE)
    except trio.TooSlowError:
        raise Unavailable(f"{target.uri}: no data for {min(cfg.read_timeout, left):g} s "
                          f"(read or transfer time cap)") from None
    except (trio.BrokenResourceError, OSError) as exc:
        raise Unavailable(f"{target.uri}: connection lost ({exc})") from None
