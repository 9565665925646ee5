# The request and response values passed between the connection handler (server.py) and the
# application (routing and handlers). Invariants: a Request is built only from a request h11
# accepted and the server's limits allowed; header names are lower-case; a Response body is
# either bytes or an async iterable of bytes-like pieces that the server sends without copying.
from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Headers:
    """Request headers: lower-case names, values decoded as latin-1, order kept."""

    items: tuple[tuple[str, str], ...]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.items if key == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


class Body(Protocol):
    """A request body, read at most once, either whole or as a stream."""

    length: int | None     # Content-Length, None for chunked or absent
    present: bool          # Glance's rule: Content-Length > 0, or chunked on POST/PUT/PATCH

    async def read_all(self, limit: int) -> bytes:
        """The whole body; raises tessera.engine.errors.TooLarge past `limit` bytes."""
        ...

    def __aiter__(self) -> AsyncIterator[memoryview]:
        """Pieces as they arrive; each is valid only until the next one is requested."""
        ...


@dataclass
class Request:
    method: str
    target: str                       # raw request target, e.g. /v2/images?limit=2
    path: str                         # percent-decoded path without the query
    query: list[tuple[str, str]]      # decoded query pairs in order (keep_blank_values)
    headers: Headers
    body: Body
    request_id: str                   # req-<uuid>, or the client's valid one
    client: tuple[str, int] = ("", 0)
    path_params: dict[str, str] = field(default_factory=dict)   # set by the router
    host_url: str = ""                # scheme://host[:port] as the client addressed us
    route: str = ""                   # the matched route pattern (set by the app; logs, metrics)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | AsyncIterable[bytes | memoryview] = b""
    # Required when body is an iterable: the server sends Content-Length, never chunked, for
    # image data (clients such as glanceclient rely on it).
    content_length: int | None = None
