# The response head (tessera.http.head): the memoised path builds exactly the head h11's plain
# path builds, and refuses every header h11 refuses, every time (failures are never memoised).
from __future__ import annotations

import h11
import pytest

from tessera.http import head
from tessera.http.head import MEMO_MAX, response_event
from tessera.http.message import Response

RID = "req-0123abcd-0123-4123-8123-0123456789ab"


def wire(event: h11.Response, request_method: bytes = b"GET") -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request_method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    return conn.send(event)


@pytest.mark.parametrize("headers, length, close", [
    ([("Content-Type", "application/json")], 1234, False),
    ([("Content-Type", "text/html; charset=UTF-8"), ("Content-Length", "0")], 0, False),
    ([("Location", "http://x/v2/images/1"), ("X-Empty", ""), ("Allow", "GET, PUT")], 7, True),
    ([], 10 ** 12, False),
])
def test_the_memoised_head_is_the_plain_head(headers, length, close):
    for _ in range(2):          # first (validated) and second (memoised) use alike
        fast = response_event(200, headers, length, RID, close, b"OK")
        plain = head._plain(200, headers, length, RID, close, b"OK")
        assert fast.headers.raw_items() == plain.headers.raw_items()
        assert wire(fast) == wire(plain)


@pytest.mark.parametrize("name, value", [
    ("X-Bad", "a\r\nSet-Cookie: evil=1"),       # response splitting
    ("X-Bad", "a\nb"),
    ("X Bad", "v"),                             # not a token
    ("", "v"),
    ("X-Bad", "caf\u00e9\u2603"),               # not latin-1
    ("X-Caf\u00e9", "v"),                       # not ascii
])
def test_bad_headers_are_refused_every_time(name, value):
    for _ in range(3):
        with pytest.raises((h11.LocalProtocolError, UnicodeError)):
            response_event(200, [("Content-Type", "text/plain"), (name, value)], 1, RID,
                           False, b"OK")
    assert (name, value) not in head._memo


def test_framing_and_odd_shapes_take_h11s_own_checks():
    with pytest.raises(h11.LocalProtocolError):      # h11 sends only chunked
        response_event(200, [("Transfer-Encoding", "gzip")], 3, RID, False, b"OK")
    with pytest.raises(h11.LocalProtocolError):      # not a valid Content-Length
        response_event(200, [], -1, RID, False, b"OK")
    event = response_event(200, [["X-List", "pair"]], 2, RID, False, b"OK")
    assert (b"x-list", b"pair") in list(event.headers)


def test_the_memo_stays_bounded():
    for i in range(MEMO_MAX * 2 + 5):
        response_event(201, [("Location", f"http://x/v2/images/{i}")], 0, RID, False, b"")
    assert len(head._memo) <= MEMO_MAX


async def test_an_injected_header_never_reaches_the_wire(memory_server, kit):
    async def bad_app(request):
        return Response(200, [("X-Name", "a\r\nX-Injected: 1")], b"ok")

    async with memory_server(kit.CFG, bad_app) as c:
        await c.send(kit.get("/") + kit.get("/"))
        for _ in range(2):           # refused again once the good headers are memoised
            status, headers, _ = await c.response()
            assert status == 500 and "x-injected" not in headers
