# The server on real sockets (127.0.0.1, port 0): hard limits, slow and idle clients, isolation
# of failures between connections, keep-alive, 100-continue, bounded connections, shutdown.
import json

import pytest
import trio

from tessera.http.message import Response


async def test_431_on_huge_headers(socket_server, kit):
    async with socket_server(max_header_bytes=8192) as (_, port, _):
        c = await kit.connect(port)
        await c.send(b"GET /info HTTP/1.1\r\nHost: x\r\n"
                     + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200)))
        status, _, _ = await c.response()
        assert status == 431
        assert await c.closed()


async def test_414_on_long_request_line(socket_server, kit):
    async with socket_server(max_request_line=1024) as (_, port, _):
        c = await kit.connect(port)
        await c.send(b"GET /" + b"a" * 5000)
        status, _, _ = await c.response()
        assert status == 414
        assert await c.closed()


async def test_smuggling_te_and_cl_is_400_and_close(socket_server, kit):
    async with socket_server() as (_, port, _):
        c = await kit.connect(port)
        await c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + kit.get("/info"))
        status, _, _ = await c.response()
        assert status == 400
        assert await c.closed()              # the smuggled GET is never answered
        assert c.buf == b""


async def test_slowloris_is_cut_while_others_are_served(socket_server, kit):
    async with socket_server(header_timeout=0.5) as (_, port, _):
        slow = await kit.connect(port)
        cut = trio.Event()

        async def trickle():
            try:
                for byte in b"GET /info HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 1000:
                    await slow.send(bytes([byte]))
                    await trio.sleep(0.05)
            except (trio.BrokenResourceError, OSError):
                pass
            cut.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            await trio.sleep(0.2)
            normal = await kit.connect(port)
            await normal.send(kit.get("/info"))
            assert (await normal.response())[0] == 200
            assert not cut.is_set()          # answered while the slow client still trickles
            assert await slow.closed()       # then the server cuts the trickler off
            nursery.cancel_scope.cancel()


async def test_200_idle_connections_do_not_block(socket_server, kit):
    async with socket_server() as (_, port, _):
        idle = [await kit.connect(port) for _ in range(200)]
        c = await kit.connect(port)
        await c.send(kit.get("/info"))
        status, _, body = await c.response()
        assert status == 200 and json.loads(body)["client"][0] == "127.0.0.1"
        for conn in idle:
            await conn.aclose()


async def test_failure_in_one_connection_leaves_others_alone(socket_server, kit):
    async with socket_server() as (_, port, _):
        a = await kit.connect(port)
        b = await kit.connect(port)
        await a.send(kit.get("/info"))
        assert (await a.response())[0] == 200
        await b.send(kit.get("/boom"))
        assert (await b.response())[0] == 500
        await b.send(kit.get("/broken"))
        assert await b.closed()
        await a.send(kit.get("/info"))        # same keep-alive connection, unaffected
        assert (await a.response())[0] == 200


async def test_broken_body_iterator_resets_connection(socket_server, kit):
    async with socket_server() as (_, port, _):
        c = await kit.connect(port)
        await c.send(kit.get("/broken"))
        assert await c.closed()
        head, _, rest = c.buf.partition(b"\r\n\r\n")
        assert b" 200 " in head and len(rest) < 3 * kit.PIECE


async def test_keep_alive_reuses_the_socket(socket_server, kit):
    async with socket_server() as (_, port, _):
        c = await kit.connect(port)
        clients = set()
        for _ in range(5):
            await c.send(kit.get("/info"))
            status, _, body = await c.response()
            assert status == 200
            clients.add(tuple(json.loads(body)["client"]))
        assert len(clients) == 1


async def test_100_continue_over_tcp(socket_server, kit):
    data = b"z" * (2 << 20)
    async with socket_server() as (_, port, _):
        c = await kit.connect(port)
        await c.send(f"PUT /count HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        assert (await c.response())[0] == 100
        await c.send(data)
        status, _, body = await c.response()
        assert status == 200 and body.split()[0] == str(len(data)).encode()


async def test_upload_through_the_direct_path(socket_server, kit):
    data = bytes(range(256)) * (16 << 12)        # 16 MiB
    async with socket_server() as (_, port, _):
        c = await kit.connect(port)
        await c.send(f"PUT /count HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode())
        await c.send(data)
        status, _, body = await c.response()
        assert status == 200 and body.split()[0] == str(len(data)).encode()
        await c.send(kit.get("/info"))
        assert (await c.response())[0] == 200


async def test_connections_past_the_limit_wait_for_a_slot(socket_server, kit):
    async with socket_server(max_connections=2, idle_timeout=0.5) as (_, port, _):
        first = [await kit.connect(port) for _ in range(2)]
        for c in first:
            await c.send(kit.get("/info"))
            assert (await c.response())[0] == 200
        third = await kit.connect(port)          # the kernel accepts; the server waits
        await third.send(kit.get("/info"))
        assert (await third.response())[0] == 200   # served once an idle one timed out
        for c in first:
            assert await c.closed()


async def test_graceful_shutdown_finishes_in_flight(socket_server, kit):
    async with socket_server() as (_, port, stop):
        busy = await kit.connect(port)
        idle = await kit.connect(port)
        await busy.send(kit.get("/slow?s=0.3"))
        await trio.sleep(0.1)
        stop.set()
        status, headers, body = await busy.response()
        assert status == 200 and body == b"slow done"
        assert headers.get("connection") == "close"
        assert await idle.closed()
        assert await busy.closed()
        with pytest.raises(OSError):            # no longer listening
            await trio.open_tcp_stream("127.0.0.1", port)


async def test_handler_sees_disconnect_as_body_incomplete(socket_server, kit):
    seen = []

    async def app(request):
        try:
            await request.body.read_all(1 << 30)
        except Exception as exc:
            seen.append(type(exc).__name__)
            raise
        return Response(200, [], b"")

    async with socket_server(app) as (_, port, _):
        c = await kit.connect(port)
        await c.send(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc")
        await trio.sleep(0.1)
        await c.aclose()
        for _ in range(50):
            if seen:
                break
            await trio.sleep(0.02)
    assert seen == ["BodyIncomplete"]


async def test_413_reaches_a_client_still_sending(socket_server, kit):
    big = b"q" * (8 << 20)
    async with socket_server() as (_, port, _):
        c = await kit.connect(port)
        await c.send(f"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}\r\n\r\n"
                     .encode())
        async with trio.open_nursery() as nursery:
            async def push():
                try:
                    await c.send(big)
                except (trio.BrokenResourceError, OSError):
                    pass
            nursery.start_soon(push)
            status, headers, body = await c.response()
        assert status == 413
        assert b"413 Request Entity Too Large" in body


async def test_chunked_upload_over_tcp_arrives_intact(socket_server, kit):
    import hashlib
    import random
    data = random.Random(3).randbytes(12 << 20)
    async with socket_server() as (_, port, _):
        c = await kit.connect(port)
        await c.send(b"PUT /digest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(data), 1 << 20):
            await c.send(b"100000\r\n")
            await c.send(data[i:i + (1 << 20)])
            await c.send(b"\r\n")
        await c.send(b"0\r\n\r\n")
        status, _, digest = await c.response()
        assert status == 200 and digest.decode() == hashlib.sha256(data).hexdigest()
