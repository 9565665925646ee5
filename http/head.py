# The h11 Response event of a response head: the application's headers, then the server's
# Content-Length, x-openstack-request-id and (when closing) Connection: close.
# Invariants: every header the application sets is checked exactly as h11 checks it (h11's own
# normalize_and_validate), once per distinct (name, value) pair, kept in a bounded memo, so a
# header h11 would refuse still raises h11.LocalProtocolError here; the application's own
# Content-Length is dropped (the server's is the body's length); a Transfer-Encoding from the
# application, a length that is not a plain non-negative int, or an h11 whose private Headers
# class does not look as expected take h11's plain path (the whole list validated by h11).
from __future__ import annotations

from collections.abc import Iterable

import h11

try:    # private: h11's validated header list, (raw name, lower-case name, value) triples
    from h11._headers import Headers as _Headers
    from h11._headers import normalize_and_validate as _validate
    _probe = _Headers([(b"A", b"a", b"b")])
    _FAST = list(_probe) == [(b"a", b"b")] and _probe.raw_items() == [(b"A", b"b")]
except Exception:           # another h11: the plain path only
    _FAST = False

MEMO_MAX = 1024                 # distinct validated (name, value) pairs kept
_MAX_LENGTH = 10 ** 18          # larger lengths go through h11's own digit check
_DROP = ()                      # memo value of the application's Content-Length
_memo: dict[tuple[str, str], tuple[bytes, bytes, bytes] | tuple[()]] = {}


def _checked(name: str, value: str) -> tuple[bytes, bytes, bytes] | tuple[()] | None:
    """The validated triple of one header, _DROP for a Content-Length, None when the whole
    head must take h11's plain path. Raises what h11 (or the encoding) raises."""
    lower = name.lower()
    if lower == "content-length":
        return _DROP
    if lower == "transfer-encoding":
        return None
    raw = name.encode("ascii")
    data = value.encode("latin-1")
    (triple,) = _validate([(raw, data)])._full_items    # type: ignore[attr-defined]
    return triple


def response_event(status: int, headers: Iterable[tuple[str, str]], length: int,
                   request_id: str, close: bool, reason: bytes) -> h11.Response:
    """The head of a response whose body is `length` bytes (h11 validates it here, before
    the connection's state changes)."""
    if _FAST and type(length) is int and 0 <= length < _MAX_LENGTH:
        memo = _memo
        items = []
        for pair in headers:
            if type(pair) is not tuple:
                break
            triple = memo.get(pair)
            if triple is None:
                triple = _checked(*pair)
                if triple is None:
                    break
                if len(memo) >= MEMO_MAX:
                    memo.clear()
                memo[pair] = triple
            if triple:
                items.append(triple)
        else:
            items.append((b"Content-Length", b"content-length", str(length).encode()))
            items.append((b"x-openstack-request-id", b"x-openstack-request-id",
                          request_id.encode()))
            if close:
                items.append((b"Connection", b"connection", b"close"))
            return h11.Response(status_code=status, headers=_Headers(items), reason=reason)
    return _plain(status, headers, length, request_id, close, reason)


def _plain(status: int, headers: Iterable[tuple[str, str]], length: int, request_id: str,
           close: bool, reason: bytes) -> h11.Response:
    items = []
    for k, v in headers:
        if k.lower() != "content-length":
            items.append((k.encode("ascii"), v.encode("latin-1")))
    items.append((b"Content-Length", str(length).encode()))
    items.append((b"x-openstack-request-id", request_id.encode()))
    if close:
        items.append((b"Connection", b"close"))
    return h11.Response(status_code=status, headers=items, reason=reason)
