# chunks/read, the raw chunk transfer of cold reads: the reply codec's strictness, the
# receive buffers' reuse rule, a real node answering from its segment files, the fallback to
# chunks/get for a node without the route, and a peer that dies or stalls mid-reply.
import os

import pytest
import trio

from tessera.replication import messages as m
from tessera.replication import rawchunks
from tessera.replication.buffers import BufferPool
from tessera.replication.peerclient import PeerClient, PeerError

MiB = 1024 * 1024


def _body(ids, datas):
    return rawchunks.header(ids, [None if d is None else len(d) for d in datas]) + b"".join(
        d for d in datas if d is not None)


def test_reply_codec_slices_the_body_and_refuses_what_does_not_add_up():
    ids = [os.urandom(32) for _ in range(3)]
    datas = [b"one", None, b"three!"]
    got = rawchunks.decode(bytearray(_body(ids, datas)), ids)
    assert [c for c, _ in got] == ids
    assert [None if v is None else bytes(v) for _, v in got] == datas
    assert all(isinstance(v, memoryview) for _, v in got if v is not None)   # no copies
    body = _body(ids, datas)
    for bad_body, asked in [(body, ids[::-1]),                  # other order than asked
                            (body, ids[:2]),                    # other count
                            (body + b"x", ids),                 # bytes nobody accounts for
                            (body[:-1], ids),                   # lengths past the body
                            (body[:3], ids),                    # shorter than its header
                            (b"\0\0\0\5junk!", ids)]:           # undecodable header
        with pytest.raises(m.ProtocolError):
            rawchunks.decode(bad_body, asked)


def test_a_buffer_is_reused_only_once_nothing_refers_to_it():
    pool = BufferPool()
    first = pool.take(MiB)
    chunk = first[100:200]             # a chunk's view, still being sent or kept
    del first
    second = pool.take(MiB)
    assert second.obj is not chunk.obj
    second[:5] = b"hello"
    assert bytes(chunk) == bytes(100)  # never written under its holder
    held = chunk.obj
    del chunk, second
    third = pool.take(MiB)
    assert third.obj is not held       # `held` still references it
    del held
    reused = {id(pool.take(MiB).obj) for _ in range(3)}
    assert len(pool) == 2 and len(reused) == 1     # the free buffers come back


async def _uploaded(engine, data):
    async def pieces():
        for i in range(0, len(data), MiB):
            yield data[i:i + MiB]

    rec = await engine.create_image({"name": "x", "disk_format": "raw",
                                     "container_format": "bare"}, owner="p")
    await engine.upload(rec.id, pieces(), expected_size=len(data))
    return rec


async def test_a_node_sends_its_copies_raw_in_the_order_asked(engine_cluster):
    engines, nodes = await engine_cluster(("a", "b"), replicas=2, write_quorum=1,
                                          anti_entropy_interval=3600.0)
    a = engines["a"]
    rec = await _uploaded(a, os.urandom(6 * MiB))
    ids = a.chunks.image_chunks(rec.id)
    unknown = os.urandom(32)
    asked = [ids[3], unknown, *ids[:3], *ids[4:]]       # not the segment's order
    reply = await nodes["b"].client.call(nodes["b"].peers["a"], m.ReadChunks(asked))
    assert [c for c, _ in reply] == asked
    assert dict(reply)[unknown] is None
    assert all(bytes(v) == a.replica.chunk_bytes(c) for c, v in reply if c != unknown)
    # a malformed request is refused like any other route's
    with pytest.raises(PeerError) as refused:
        await nodes["b"].client.call(nodes["b"].peers["a"], m.ReadChunks([b"short"]))
    assert refused.value.status == 400


async def test_a_node_without_chunks_read_is_asked_with_chunks_get(engine_cluster,
                                                                   monkeypatch):
    # every listener here forgets the route: it answers 404, as a node of an older version
    monkeypatch.delitem(m.REQUESTS, m.ReadChunks.ROUTE)
    engines, nodes = await engine_cluster(("a", "b"), replicas=1, write_quorum=1,
                                          anti_entropy_interval=3600.0)
    a, b = engines["a"], engines["b"]
    data = os.urandom(8 * MiB)
    rec = await _uploaded(a, data)
    with trio.move_on_after(20):
        while b.replica.stamp_of(rec.id) != a.replica.stamp_of(rec.id):
            await trio.sleep(0.05)
    assert b.replica.missing(a.chunks.image_chunks(rec.id))
    out = bytearray()
    async for view in b.open_download(rec.id):
        out += view
    assert out == data
    assert nodes["b"].fetcher._packed == {"a"}


async def _serve_once(reply_head: bytes, body_part: bytes, *, stall: bool,
                      task_status=trio.TASK_STATUS_IGNORED):
    """A fake peer: reads one request, sends `reply_head` and `body_part`, then closes the
    connection (or stalls with it open)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    stream = await listeners[0].accept()
    async with stream:
        await stream.receive_some(65536)
        await stream.send_all(reply_head + body_part)
        if stall:
            await trio.sleep_forever()


@pytest.mark.parametrize("stall", [False, True])
async def test_a_peer_that_dies_or_stalls_mid_reply_fails_the_call(stall):
    ids = [os.urandom(32) for _ in range(4)]
    body = _body(ids, [os.urandom(MiB) for _ in ids])
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/x-tessera-chunks\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
    client = PeerClient(os.urandom(32), "b")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: _serve_once(
            head, body[:len(body) // 2], stall=stall, task_status=task_status))
        with pytest.raises(PeerError):
            await client.call(f"127.0.0.1:{port}", m.ReadChunks(ids), timeout=1.0)
        nursery.cancel_scope.cancel()
    assert client.contact[f"127.0.0.1:{port}"][0] is False
