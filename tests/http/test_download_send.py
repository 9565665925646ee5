# Downloads sent by worker threads (http/bodysend.py) over real sockets from a real chunk
# store: identical bytes for whole images and ranges, also to a client that reads slowly
# (the socket fills, the sender waits and prepares ahead) and to several clients at once;
# a flipped byte on disk cuts the response before any byte of the bad chunk leaves.
import importlib.util
import os
import random
from pathlib import Path

import trio

from tessera.engine import reader
from tessera.engine.datapath import Download
from tessera.http.message import Response

MiB = 1 << 20


_spec = importlib.util.spec_from_file_location(
    "tessera_tests_storehelp", Path(__file__).parents[1] / "engine" / "storehelp.py")
_help = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_help)
store, put, flip_byte = _help.store, _help.put, _help.flip_byte      # store: a fixture
make_stale = _help.make_stale


def download_app(store, image_id, size):
    """GET /?a=START&b=END serves [a, b) of the image as the API does (a primed Download)."""
    async def app(request):
        q = dict(request.query)
        a, b = int(q.get("a", 0)), int(q.get("b", size))
        dl = Download(None, a, b, size, store.read(image_id, a, b))
        await dl.prime()
        return Response(200, [], dl, content_length=b - a)
    return app


async def fetch(kit, port, target, slow=False):
    """Status, declared length and the body bytes received until the end or a cut."""
    raw = await kit.connect(port)
    try:
        await raw.send(kit.get(target))
        status, headers, _ = await raw.response(head_only=True)
        length = int(headers["content-length"])
        got = bytearray(raw.buf)
        try:
            while len(got) < length:
                if slow and len(got) < 12 * MiB:
                    await trio.sleep(0.002)
                data = await raw.stream.receive_some(64 * 1024 if slow else MiB)
                if not data:
                    break
                got += data
        except (trio.BrokenResourceError, ConnectionError):
            pass
        return status, length, bytes(got)
    finally:
        await raw.aclose()


async def test_whole_image_and_ranges_are_identical(store, socket_server, kit, monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", 1_000_000)     # many batches, edges anywhere
    data = os.urandom(5 * MiB) + bytes(3 * MiB) + os.urandom(2 * MiB + 4321)
    image_id = await put(store, data)
    async with socket_server(download_app(store, image_id, len(data))) as (_, port, _):
        status, length, got = await fetch(kit, port, "/")
        assert status == 200 and length == len(data) and got == data
        rng = random.Random(5)
        for _ in range(6):
            a = rng.randrange(len(data))
            b = rng.randrange(a + 1, len(data) + 1)
            status, length, got = await fetch(kit, port, f"/?a={a}&b={b}")
            assert length == b - a and got == data[a:b]


async def test_a_slow_reader_and_concurrent_readers_get_identical_bytes(store, socket_server,
                                                                        kit):
    data = os.urandom(24 * MiB)
    image_id = await put(store, data)
    results = []

    async def one(slow):
        results.append(await fetch(kit, port, "/", slow=slow))

    async with socket_server(download_app(store, image_id, len(data))) as (_, port, _):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, True)
            for _ in range(3):
                nursery.start_soon(one, False)
    assert len(results) == 4
    assert all(r[0] == 200 and r[2] == data for r in results)


async def test_a_flipped_byte_cuts_the_response_before_the_bad_chunk(store, socket_server, kit,
                                                                      monkeypatch):
    monkeypatch.setattr(reader, "BATCH_BYTES", 512 * 1024)
    data = os.urandom(12 * MiB)
    image_id = await put(store, data)
    chunks = store.image_chunks(image_id)
    bad = len(chunks) * 2 // 3
    await make_stale(store, [chunks[bad]])     # the others are trusted: sent by sendfile
    with store.index.read() as txn:
        entries = [store.db.get(txn, cid) for cid in chunks]
    bad_start = sum(e.length for e in entries[:bad])      # where the bad chunk begins
    e = entries[bad]
    flip_byte(store, e, e.length // 2, 0x01)
    async with socket_server(download_app(store, image_id, len(data))) as (_, port, _):
        status, length, got = await fetch(kit, port, "/")
        assert status == 200 and length == len(data)
        assert len(got) <= bad_start and data.startswith(got)
        status, _, got = await fetch(kit, port, f"/?a=0&b={bad_start}")   # before it: fine
        assert got == data[:bad_start]


async def test_a_stalled_client_leaves_the_sender_cancellable_and_the_socket_non_blocking(
        store):
    """The step threads write with the socket in blocking mode: a client that reads nothing
    still lets the connection's task be cancelled (each blocking write is bounded), the
    socket is non-blocking again afterwards, and what went out is exactly the image's
    first bytes."""
    import socket

    import h11

    from tessera.http.bodysend import BatchSender, batch_reader

    data = os.urandom(24 * MiB)
    image_id = await put(store, data)
    server, client = socket.socketpair()
    with server, client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(server))
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert type(conn.next_event()) is h11.Request
        conn.send(h11.Response(status_code=200, headers=[("Content-Length", str(len(data)))]))
        dl = Download(None, 0, len(data), len(data), store.read(image_id, 0, len(data)))
        await dl.prime()
        sender = BatchSender(batch_reader(dl), server)
        client.setblocking(False)
        got = bytearray()
        reader = trio.SocketStream(trio.socket.from_stdlib_socket(client))
        scope = trio.CancelScope()

        async def send():
            with scope:
                await sender.send(dl, conn, stream.send_all, lambda: None)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while len(got) < 8 * MiB:            # past the primed first view ...
                    got += await reader.receive_some(1 << 20)
                await trio.sleep(1.0)                # ... then nothing: the socket fills
                scope.cancel()
        assert scope.cancelled_caught
        assert 0 < sender.sent < len(data)
        assert os.get_blocking(server.fileno()) is False
        while True:
            try:
                piece = client.recv(1 << 20)
            except BlockingIOError:
                break
            got += piece
        assert bytes(got) == data[:sender.sent]
        await dl.aclose()
