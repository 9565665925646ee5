# Reading request heads and writing small responses straight on a connection's socket
# (os.readv / os.write on its non-blocking fd), instead of through trio's socket wrappers,
# which yield to the scheduler after every call that succeeds at once.
# Invariants: a connection yields to the scheduler at least once per request head it reads:
# `recv_head` always yields once (waiting for bytes, or a checkpoint when they were already
# there), and so does `next_buffered` for a head already received, so a client that pipelines
# requests never keeps the event loop to itself; `send_small` yields only when the kernel
# does not take all the bytes at once (then trio's send_all sends the rest, with its waits);
# both honour cancellation before touching the socket (checkpoint_if_cancelled) and raise
# OSError subclasses on a broken connection, as trio's socket calls do. Streams without a
# socket (in-memory test streams) use the Transport's own calls.
from __future__ import annotations

import os

import trio

from tessera.http.body import Transport

_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_yield = trio.lowlevel.cancel_shielded_checkpoint
_wait_readable = trio.lowlevel.wait_readable


async def recv_head(transport: Transport, view: memoryview, nbytes: int) -> int:
    """Up to `nbytes` bytes into `view` (0 at the end of the stream), waiting if need be."""
    fd = transport.fd
    if fd < 0:
        return await transport.recv_into(view, nbytes)
    await _checkpoint_if_cancelled()
    target = [view[:nbytes]]
    try:
        n = os.readv(fd, target)
    except BlockingIOError:
        while True:
            await _wait_readable(fd)
            try:
                return os.readv(fd, target)
            except BlockingIOError:
                continue
    await _yield()            # the bytes were there already: still let the others run
    return n


async def next_buffered() -> None:
    """The yield of a request whose head was already received (a pipelined request)."""
    await _checkpoint_if_cancelled()
    await _yield()


async def send_small(transport: Transport, data: bytes | bytearray | memoryview) -> None:
    """Send all of `data`; no yield when the kernel takes it at once (the usual case for a
    small response on a connection whose client reads)."""
    fd = transport.fd
    if fd < 0:
        await transport.send_all(data)
        return
    await _checkpoint_if_cancelled()
    try:
        n = os.write(fd, data)
    except BlockingIOError:
        n = 0
    if n < len(data):
        await transport.send_all(memoryview(data)[n:])
