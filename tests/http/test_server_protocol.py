# The connection handler over in-memory streams (no sockets): framing, keep-alive, bodies,
# 100-continue, request ids, error rendering, timeouts under trio's autojump clock.
import json
import logging
import re
from dataclasses import replace

import pytest
import trio

from tessera.engine.errors import CorruptData
from tessera.http.message import Response


async def test_keep_alive_two_requests(memory_server, kit):
    async with memory_server() as c:
        await c.send(kit.get("/info?a=1&b=&a=%20x") + kit.get("/info"))
        s1, h1, b1 = await c.response()
        s2, h2, b2 = await c.response()
    assert s1 == s2 == 200
    info = json.loads(b1)
    assert info["query"] == [["a", "1"], ["b", ""], ["a", " x"]]
    assert info["host_url"] == "http://example.test:9292"
    assert info["present"] is False and info["length"] is None
    assert re.fullmatch(r"req-[0-9a-f-]{36}", h1["x-openstack-request-id"])
    assert h1["x-openstack-request-id"] != h2["x-openstack-request-id"]
    assert info["request_id"] == h1["x-openstack-request-id"]
    assert h1["content-length"] == str(len(b1))


async def test_request_id_from_client_only_when_well_formed(memory_server, kit):
    good = "req-0123abcd-0000-4000-8000-0123456789ab"
    async with memory_server() as c:
        await c.send(kit.get("/info", f"X-Openstack-Request-ID: {good}"))
        _, h, _ = await c.response()
        await c.send(kit.get("/info", "X-Openstack-Request-ID: req-<script>"))
        _, h2, _ = await c.response()
    assert h["x-openstack-request-id"] == good
    assert h2["x-openstack-request-id"] != "req-<script>"


async def test_percent_decoded_path_and_public_endpoint(memory_server, kit):
    cfg = replace(kit.CFG, public_endpoint="https://images.example/")
    async with memory_server(cfg) as c:
        await c.send(kit.get("/in%66o"))
        _, _, body = await c.response()
    info = json.loads(body)
    assert info["path"] == "/info" and info["target"] == "/in%66o"
    assert info["host_url"] == "https://images.example"


async def test_content_length_body_in_pieces(memory_server, kit):
    data = bytes(range(256)) * 12288          # 3 MiB: more than one pooled buffer
    async with memory_server() as c:
        await c.send(f"PUT /count HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data + kit.get("/info"))
        status, _, body = await c.response()
        status2, _, _ = await c.response()
    assert status == 200 and body.split()[0] == str(len(data)).encode()
    assert int(body.split()[1]) >= 3
    assert status2 == 200                      # h11 state stayed consistent: next request works


async def test_chunked_body_read_all(memory_server, kit):
    chunks = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    async with memory_server() as c:
        await c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunks)
        status, _, body = await c.response()
    assert status == 200 and body == b"hello world"


async def test_chunked_body_is_present_only_on_writes(memory_server, kit):
    async with memory_server() as c:
        await c.send(b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n")
        _, _, body = await c.response()
    assert json.loads(body)["present"] is True


async def test_body_over_limit_is_413_and_connection_survives(memory_server, kit):
    big = b"a" * (5 << 20)
    async with memory_server() as c:
        await c.send(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}\r\n\r\n"
                     .encode())
        status, headers, _ = await c.response()
        assert status == 413
        assert await c.closed()               # 5 MiB unread: more than the drain cap


async def test_small_unread_body_is_drained_for_keep_alive(memory_server, kit):
    async with memory_server() as c:
        await c.send(b"PUT /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
                     + kit.get("/info"))
        assert (await c.response())[0] == 201
        assert (await c.response())[0] == 200


async def test_100_continue_sent_only_when_body_is_read(memory_server, kit):
    async with memory_server() as c:
        await c.send(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        status, _, _ = await c.response()
        assert status == 100
        await c.send(b"data")
        status, _, body = await c.response()
        assert status == 200 and body == b"data"
    async with memory_server() as c:
        await c.send(b"PUT /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        status, headers, _ = await c.response()
        assert status == 201                  # no 100 first: the handler never read
        assert headers.get("connection") == "close"
        assert await c.closed()


async def test_head_sends_headers_only(memory_server, kit):
    async with memory_server() as c:
        await c.send(b"HEAD /info HTTP/1.1\r\nHost: x\r\n\r\n" + kit.get("/info"))
        status, headers, _ = await c.response(head_only=True)
        status2, _, body2 = await c.response()
    assert status == 200 and int(headers["content-length"]) > 0
    assert status2 == 200 and json.loads(body2)["method"] == "GET"


async def test_streamed_body_with_content_length(memory_server, kit):
    async with memory_server() as c:
        await c.send(kit.get("/stream") + kit.get("/empty"))
        status, headers, body = await c.response()
        status2, headers2, body2 = await c.response()
    assert status == 200 and "transfer-encoding" not in headers
    assert body == bytes(range(256)) * (3 * kit.PIECE // 256)
    assert status2 == 204 and body2 == b""


async def test_body_iterator_failure_aborts_connection(memory_server, kit):
    async with memory_server() as c:
        await c.send(kit.get("/broken"))
        while b"\r\n\r\n" not in c.buf:
            await c._fill()
        assert await c.closed()
        head, rest = c.buf.split(b"\r\n\r\n", 1)
    assert b"200 OK" in head and len(rest) == kit.PIECE   # nothing sent after the failure


async def test_unhandled_exception_is_500_without_traceback(memory_server, kit, caplog):
    caplog.set_level(logging.ERROR, logger="tessera.http")
    async with memory_server() as c:
        await c.send(kit.get("/boom", "Accept: application/json") + kit.get("/info"))
        status, _, body = await c.response()
        status2, _, _ = await c.response()
    assert status == 500 and b"secret" not in body
    assert json.loads(body)["code"] == "500 Internal Server Error"
    assert status2 == 200
    assert any("secret internal detail" in (r.exc_text or "") for r in caplog.records)


async def test_engine_error_rendered_as_glance(memory_server, kit):
    async with memory_server() as c:
        await c.send(kit.get("/missing"))
        status, headers, body = await c.response()
    assert status == 404 and headers["content-type"] == "text/plain; charset=UTF-8"
    assert body == b"404 Not Found\n\nNo image found with ID x\n\n   "


async def test_access_log_line(memory_server, kit, caplog):
    caplog.set_level(logging.INFO, logger="tessera.access")
    async with memory_server() as c:
        await c.send(kit.get("/info?x=1"))
        _, headers, body = await c.response()
    lines = [r.getMessage() for r in caplog.records if r.name == "tessera.access"]
    assert len(lines) == 1
    rid = headers["x-openstack-request-id"]
    assert lines[0].startswith(rid + " ") and '"GET /info?x=1" 200 ' in lines[0]
    assert f" 200 {len(body)} " in lines[0] and lines[0].endswith("ms")


@pytest.mark.parametrize("raw", [
    b"this is not http\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
], ids=["bad_request_line", "both_transfer_encoding_and_content_length",
        "malformed_chunked_body"])
async def test_malformed_request_is_400_and_closes(memory_server, raw):
    async with memory_server() as c:
        await c.send(raw)
        status, headers, _ = await c.response()
        assert status == 400 and headers.get("connection") == "close"
        assert await c.closed()


async def test_header_timeout_closes(memory_server, kit, autojump_clock):
    async with memory_server() as c:
        await c.send(b"GET /info HTTP/1.1\r\nHost: x\r\n")     # never finished
        assert await c.closed()
    assert trio.current_time() >= kit.CFG.header_timeout


async def test_idle_keep_alive_timeout_closes(memory_server, kit, autojump_clock):
    async with memory_server() as c:
        await c.send(kit.get("/info"))
        assert (await c.response())[0] == 200
        t0 = trio.current_time()
        assert await c.closed()
    assert trio.current_time() - t0 >= kit.CFG.idle_timeout


async def test_body_pause_timeout_closes(memory_server, kit, autojump_clock):
    async with memory_server() as c:
        await c.send(b"PUT /count HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        assert await c.closed()
    assert trio.current_time() >= kit.CFG.body_timeout


async def test_request_line_too_long_is_414(memory_server, kit):
    cfg = replace(kit.CFG, max_request_line=100)
    async with memory_server(cfg) as c:
        await c.send(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await c.response()
        assert status == 414
        assert await c.closed()


async def test_too_many_header_bytes_is_431(memory_server, kit):
    cfg = replace(kit.CFG, max_header_bytes=4096)
    async with memory_server(cfg) as c:
        await c.send(b"GET /info HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 8000 + b"\r\n\r\n")
        status, _, _ = await c.response()
        assert status == 431
        assert await c.closed()


async def test_iterable_body_without_length_is_500(memory_server, kit):
    closed = []

    async def bad_app(request):
        async def pieces():
            try:
                yield b"x"
            finally:
                closed.append(True)
        gen = pieces()
        await gen.asend(None)                  # started, so closing it runs the finally
        return Response(200, [], gen)

    async with memory_server(kit.CFG, bad_app) as c:
        await c.send(kit.get("/"))
        status, headers, _ = await c.response()
    assert status == 500 and "transfer-encoding" not in headers
    assert closed == [True]


def _chunked(data: bytes, size: int, ext: bytes = b"") -> bytes:
    out = []
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
    return b"".join(out)


async def test_chunked_bodies_arrive_intact(memory_server, kit):
    import hashlib
    import random
    data = random.Random(7).randbytes(5 * (1 << 20) + 12345)
    cases = [_chunked(data, 1 << 20) + b"0\r\n\r\n",                  # glanceclient's 1 MiB
             _chunked(data, 4000) + b"0\r\n\r\n",                     # small chunks
             _chunked(data, 300000, b";ext=1") + b"0\r\nX-Trailer: t\r\n\r\n"]
    async with memory_server() as c:
        for body in cases:
            await c.send(b"PUT /digest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + body)
            status, _, digest = await c.response()
            assert status == 200 and digest.decode() == hashlib.sha256(data).hexdigest()
        await c.send(kit.get("/info"))
        assert (await c.response())[0] == 200


async def test_content_length_body_arrives_intact(memory_server, kit):
    import hashlib
    import random
    data = random.Random(8).randbytes(3 * (1 << 20) + 7)
    async with memory_server() as c:
        await c.send(f"PUT /digest HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data)
        status, _, digest = await c.response()
    assert status == 200 and digest.decode() == hashlib.sha256(data).hexdigest()


async def test_bad_chunk_footer_is_400(memory_server):
    async with memory_server() as c:
        await c.send(b"PUT /digest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n" % 100000 + b"a" * 100000 + b"XX0\r\n\r\n")
        status, _, _ = await c.response()
        assert status == 400
        assert await c.closed()


async def test_invalid_response_headers_become_500(memory_server, kit):
    async def bad_app(request):
        return Response(200, [("X-Name", "caf\u00e9\u2603")], b"ok")

    async with memory_server(kit.CFG, bad_app) as c:
        await c.send(kit.get("/") + kit.get("/"))
        assert (await c.response())[0] == 500
        assert (await c.response())[0] == 500     # the connection stays usable


async def test_head_on_a_streamed_body_sends_no_body(memory_server, kit):
    async with memory_server() as c:
        await c.send(b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n" + kit.get("/empty"))
        status, headers, _ = await c.response(head_only=True)
        assert status == 200 and headers["content-length"] == str(3 * kit.PIECE)
        status2, _, _ = await c.response()
        assert status2 == 204                     # nothing of /stream's body came before it
        assert c.buf == b""


async def test_mixed_chunk_sizes(memory_server, kit):
    import hashlib
    import random
    rnd = random.Random(11)
    data = rnd.randbytes(3 << 20)
    body, i = [], 0
    for size in [1 << 20, 10, 3, 500000, 7, 65536, 1]:
        piece = data[i:i + size]
        body.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        i += size
    rest = data[i:]
    body.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
    async with memory_server() as c:
        await c.send(b"PUT /digest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"".join(body))
        status, _, digest = await c.response()
    assert status == 200 and digest.decode() == hashlib.sha256(data).hexdigest()


class _Body:
    """A streamed body that notes whether the server closed it."""

    def __init__(self, fail_after: int | None) -> None:
        self.closed = False
        self.fail_after = fail_after
        self.sent = 0

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise CorruptData("chunk failed verification")
        self.sent += 1
        await trio.sleep(0)
        return b"x" * 65536

    async def aclose(self) -> None:
        self.closed = True


async def test_a_body_cut_off_midway_is_closed(memory_server, kit):
    """A response body that fails (or whose client goes away) is closed, so the work it
    does ahead (a download's verification in worker threads) stops."""
    bodies = []

    async def application(request):
        body = _Body(fail_after=2)
        bodies.append(body)
        return Response(200, [], body, content_length=10 * 65536)

    async with memory_server(application=application) as c:
        await c.send(kit.get("/x"))
        assert await c.closed()
    assert bodies and bodies[0].closed
