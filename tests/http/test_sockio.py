# Small reads and writes straight on the socket (tessera.http.sockio): the bytes, the end of
# the stream, a send larger than the kernel takes at once, and the one yield per request head
# that keeps a pipelining client from holding the event loop.
from __future__ import annotations

import trio

from tessera.http.body import Transport
from tessera.http.sockio import next_buffered, recv_head, send_small


def pair():
    a, b = trio.socket.socketpair()
    return Transport(trio.SocketStream(a)), trio.SocketStream(b)


class Yields(trio.abc.Instrument):
    """Counts the times the current task gives the scheduler a turn."""

    def __init__(self) -> None:
        self.task = trio.lowlevel.current_task()
        self.count = 0

    def after_task_step(self, task) -> None:
        if task is self.task:
            self.count += 1


async def yields_of(fn, *args):
    counter = Yields()
    trio.lowlevel.add_instrument(counter)
    try:
        result = await fn(*args)
    finally:
        trio.lowlevel.remove_instrument(counter)
    return result, counter.count


async def test_recv_head_reads_waits_and_sees_the_end():
    ours, peer = pair()
    view = memoryview(bytearray(64))
    async with trio.open_nursery() as n:
        async def later():
            await trio.sleep(0.01)
            await peer.send_all(b"GET / HTTP/1.1\r\n")
        n.start_soon(later)
        got = await recv_head(ours, view, 64)         # waits for the bytes
    assert bytes(view[:got]) == b"GET / HTTP/1.1\r\n"
    await peer.send_all(b"0123456789")
    assert await recv_head(ours, view, 4) == 4 and bytes(view[:4]) == b"0123"
    await peer.aclose()
    assert await recv_head(ours, view, 64) == 6
    assert await recv_head(ours, view, 64) == 0        # end of stream


async def test_one_yield_per_head_and_none_for_a_small_send():
    ours, peer = pair()
    view = memoryview(bytearray(64))
    await peer.send_all(b"x" * 10)
    await trio.sleep(0.01)
    assert await yields_of(recv_head, ours, view, 64) == (10, 1)   # bytes there: one yield
    assert await yields_of(next_buffered) == (None, 1)
    assert await yields_of(send_small, ours, b"y" * 1000) == (None, 0)
    assert await peer.receive_some(2000) == b"y" * 1000


async def test_send_small_sends_everything_even_past_the_socket_buffer():
    ours, peer = pair()
    payload = bytes(range(256)) * 16384                 # 4 MiB: more than the kernel takes
    received = bytearray()
    async with trio.open_nursery() as n:
        async def reader():
            while len(received) < len(payload):
                received.extend(await peer.receive_some(1 << 20))
        n.start_soon(reader)
        await send_small(ours, payload)
        await send_small(ours, b"")
    assert received == payload


async def test_a_cancelled_scope_stops_before_touching_the_socket():
    ours, peer = pair()
    await peer.send_all(b"abc")
    view = memoryview(bytearray(8))
    with trio.CancelScope() as scope:
        scope.cancel()
        await recv_head(ours, view, 8)
    assert scope.cancelled_caught
    assert await recv_head(ours, view, 8) == 3          # the bytes are still there
