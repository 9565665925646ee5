# Sending a download body from worker threads. A response body whose reader prepares verified
# batches in the calling thread (the engine's ChunkReader.next_batch) is sent in steps: one
# worker thread per step prepares a batch (reads and, where due, BLAKE3-verifies its chunks)
# and writes it to the socket, runs of segment bytes with non-blocking sendfile (zero-copy,
# pages never mapped here), other views with writev, batch after batch, until the socket is full,
# STEP_BYTES went out or the body ended; while the socket is full it prepares the next batch,
# so hashing overlaps the client draining the socket, then waits up to POLL_WAIT_MS in the
# thread for room (cheaper than a round trip through the event loop) unless another
# download waits for a step thread. The event loop only starts steps and waits for
# writability; no per-chunk work and no lock handoff per chunk between threads.
# Invariants:
# - Only views the reader handed out are written, and a batch is handed out only once all its
#   chunks passed verification: a reader error ends the body before any byte of the failing
#   batch leaves (the connection then aborts, as for any failed body).
# - The socket is written by one thread at a time, only while the connection's task awaits
#   that thread (steps are never abandoned), so its descriptor is never closed or reused
#   under a write; a full socket ends the step and the task waits with trio (timeouts and
#   cancellation work as for any send).
# - At most one step per core but one (the event loop's) runs at once, per trio run: more
#   threads would only take turns on the GIL (measured: 8 streams through 1 thread cost 0.67
#   CPU s/GiB, through 2 or 4 threads 0.79 and 0.85, at the same aggregate rate).
# - h11 is told of every view and file range (send_with_data_passthrough, which copies
#   nothing and only takes len()), so its Content-Length accounting and end-of-message check
#   stay exact; the parts it hands back are not written (the step threads wrote them).
from __future__ import annotations

import os
import select
from typing import Any

import h11
import trio

from tessera.engine.reader import FileRange

STEP_BYTES = 16 * 1024 * 1024   # bytes one step sends before it yields to the event loop
IOV_MAX = 512                   # views passed to one writev (the kernel allows 1024)
POLL_WAIT_MS = 5                # a step waits this long for room in a full socket
_limiter: trio.lowlevel.RunVar = trio.lowlevel.RunVar("tessera_body_send_limiter")


def batch_reader(body: Any) -> Any:
    """The body's batch-capable reader, or None (the body is then iterated as usual)."""
    reader = getattr(body, "reader", None)
    return reader if callable(getattr(reader, "next_batch", None)) else None


def _limit() -> trio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(max(1, (os.cpu_count() or 1) - 1))
        _limiter.set(limiter)
        return limiter


class BatchSender:
    """Sends one body; `sent` counts the bytes written so far (also after an error)."""

    __slots__ = ("_next_batch", "_fd", "_pending", "_ahead", "_done", "_limiter", "sent")

    def __init__(self, reader: Any, fd: int) -> None:
        self._next_batch = lambda: reader.next_batch(files=True)
        self._fd = fd
        self._pending: list[Any] = []           # views / file ranges of the batch being written
        self._ahead: list[Any] = []             # the next batch, prepared while blocked
        self._done = False                      # the reader has nothing more
        self._limiter: trio.CapacityLimiter | None = None
        self.sent = 0

    async def send(self, body: Any, conn: h11.Connection, send_all: Any, touch: Any) -> None:
        """Send the whole body; `touch()` is called before each wait (the body timeout)."""
        # A primed download holds its first view: it goes out through the ordinary iterator
        # (which then leaves the reader where next_batch goes on).
        try:
            first = await body.__aiter__().__anext__()
        except StopAsyncIteration:
            first = None
        if first is not None:
            touch()
            for part in conn.send_with_data_passthrough(h11.Data(data=first)):
                await send_all(part)
            self.sent += len(first)
        limiter = self._limiter = _limit()
        while True:
            touch()
            got, blocked = await trio.to_thread.run_sync(self._step, limiter=limiter)
            for view in got:
                conn.send_with_data_passthrough(h11.Data(data=view))
            if not blocked:
                if self._done and not self._pending and not self._ahead:
                    break
                continue
            await trio.lowlevel.wait_writable(self._fd)
        await body.aclose()              # the reader's last batches leave the process

    def _step(self) -> tuple[list[Any], bool]:
        """Worker thread: write until the socket is full (True), STEP_BYTES went out or
        the body ended (False); also returns the views obtained from the reader."""
        got: list[Any] = []
        fd = self._fd
        step_end = self.sent + STEP_BYTES
        while True:
            if not self._pending:
                if self._ahead:
                    self._pending, self._ahead = self._ahead, []
                elif self._done or self.sent >= step_end:
                    return got, False
                else:
                    views = self._next_batch()
                    if not views:
                        self._done = True
                        return got, False
                    got.extend(views)
                    self._pending = views
            try:
                n = _write(fd, self._pending)
            except BlockingIOError:
                if self._ahead or self._done:
                    if self._room_soon():
                        continue
                    return got, True
                views = self._next_batch()  # prepare the next batch while the socket drains
                if views:
                    got.extend(views)
                    self._ahead = views
                else:
                    self._done = True
                continue
            self.sent += n
            pending = self._pending
            i = 0
            while n and n >= len(pending[i]):
                n -= len(pending[i])
                i += 1
            if n:
                head = pending[i]
                pending[i] = head.tail(n) if isinstance(head, FileRange) else head[n:]
            del pending[:i]

    def _room_soon(self) -> bool:
        """Worker thread, socket full: wait briefly for room, unless another download waits
        for a step thread (a benign racy read of the limiter: a heuristic, nothing more)."""
        limiter = self._limiter
        if limiter is not None and limiter.statistics().tasks_waiting:
            return False
        poller = select.poll()
        poller.register(self._fd, select.POLLOUT)
        return bool(poller.poll(POLL_WAIT_MS))


def _write(fd: int, pending: list[Any]) -> int:
    """One non-blocking write of the head of `pending`: sendfile for a file range, else
    writev of the views up to the next file range (at most IOV_MAX)."""
    head = pending[0]
    if isinstance(head, FileRange):
        n = os.sendfile(fd, head.file.fileno(), head.offset, head.length)
        if n == 0:                       # the file ends early: never spin on it
            raise OSError(f"segment file ended before {head.length} bytes at {head.offset}")
        return n
    k = 1
    while k < len(pending) and k < IOV_MAX and not isinstance(pending[k], FileRange):
        k += 1
    return os.writev(fd, pending[:k])
