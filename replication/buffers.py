# Receive buffers for chunks/read replies, reused: a fresh multi-MiB bytearray costs its
# zero-filling and a page fault per page on every reply, which showed as a fifth of the
# event loop's time in a cold pull. A buffer is handed out again only once nothing refers
# to it any more (the views of a reply's chunks are served and kept from it).
# Invariants:
# - take() never returns a buffer anything else still references: reuse is decided by the
#   buffer's reference count (CPython), calibrated at start against a buffer only the pool
#   holds, so a view, a slice or any other holder keeps it out of reuse.
# - At most KEEP_BYTES are pooled; other buffers are ordinary allocations the garbage
#   collector frees. Pooled buffers idle for IDLE seconds are dropped, so memory is given
#   back after a burst. New buffers are anonymous mappings: their pages are zeroed by the
#   kernel when the receiving thread first writes them, not by the event loop.
from __future__ import annotations

import mmap
import sys
import time

KEEP_BYTES = 192 * 1024 * 1024
GRAIN = 256 * 1024
IDLE = 10.0


class BufferPool:
    def __init__(self) -> None:
        self._bufs: list[mmap.mmap] = []
        self._bytes = 0
        self._used: list[float] = []     # when each pooled buffer was last handed out
        probe = [mmap.mmap(-1, mmap.PAGESIZE)]
        self._free_count = self._count(probe, 0)

    @staticmethod
    def _count(bufs: list[mmap.mmap], i: int) -> int:
        return sys.getrefcount(bufs[i])

    def take(self, n: int) -> memoryview:
        """A writable view of exactly `n` bytes (contents undefined)."""
        now = time.monotonic()
        bufs, used = self._bufs, self._used
        free = self._free_count
        i = 0
        while i < len(bufs):
            if self._count(bufs, i) <= free:
                if n <= len(bufs[i]) <= 2 * n + GRAIN:
                    used[i] = now
                    return memoryview(bufs[i])[:n]
                if now - used[i] > IDLE:
                    self._bytes -= len(bufs[i])
                    del bufs[i], used[i]
                    continue
            i += 1
        size = -(-n // GRAIN) * GRAIN
        buf = mmap.mmap(-1, size)
        if self._bytes + size <= KEEP_BYTES:
            bufs.append(buf)
            used.append(now)
            self._bytes += size
        return memoryview(buf)[:n]

    def __len__(self) -> int:
        return len(self._bufs)
