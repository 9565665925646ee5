# The chunker: splits a byte stream into zero extents and content-defined data chunks.
# Invariants:
# - Zero extents are maximal runs of all-zero 4 KiB blocks (aligned to the stream offset)
#   totalling at least 64 KiB; they are never stored and never hashed.
# - The bytes in between are cut by pyfastcdc FastCDC-2020 (avg 64 KiB, min 16 KiB, max
#   256 KiB, NC=1, seed 0). A data region is cut from its start; a cut is emitted only once
#   the bytes it depends on are known, so the extents are identical however the stream was
#   split into pieces (the chunker carries a short tail between calls).
# - CHUNKER_ID names library, version and parameters; it is part of the on-disk format.
from __future__ import annotations

from dataclasses import dataclass

import pyfastcdc

AVG_SIZE = 64 * 1024
MIN_SIZE = 16 * 1024
MAX_SIZE = 256 * 1024
NORMALIZATION = 1
SEED = 0
ZERO_BLOCK = 4096
ZERO_MIN_RUN = 64 * 1024

CHUNKER_ID = (f"pyfastcdc-{pyfastcdc.__version__}/fastcdc2020/avg={AVG_SIZE},min={MIN_SIZE},"
              f"max={MAX_SIZE},nc={NORMALIZATION},seed={SEED}/zero-split={ZERO_MIN_RUN}@{ZERO_BLOCK}")

# The longest tail `cut` may leave for the next call: a chunk start that cannot be decided yet
# (< MAX_SIZE before the undecided end) plus a short trailing zero run and a partial block.
MAX_CARRY = MAX_SIZE + ZERO_MIN_RUN + 2 * ZERO_BLOCK

_ZEROS = bytes(ZERO_BLOCK)

ZERO = 0
DATA = 1


@dataclass
class Cut:
    """The result of one `Chunker.cut` call. `extents` are (kind, start, length) with `start`
    relative to the region passed in; bytes from `consumed` on must be passed again (at the
    front of the next region). A zero extent may continue into the next call's first extent."""
    extents: list[tuple[int, int, int]]
    consumed: int


class Chunker:
    """Stateful cutter for one stream. Not thread-safe; one per ingest."""

    def __init__(self) -> None:
        self._cdc = pyfastcdc.FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE,
                                      normalized_chunking=NORMALIZATION, seed=SEED)
        self._zero_open = False  # the last extent emitted is a zero run that may go on

    def cut(self, buf: bytearray, lo: int, hi: int, base: int, final: bool) -> Cut:
        """Cut `buf[lo:hi]`, whose first byte is at stream offset `base`."""
        first = lo + (-base) % ZERO_BLOCK          # first aligned block start in buf coords
        tail_block = hi - (hi - first) % ZERO_BLOCK if hi >= first else lo  # partial block
        was_open, self._zero_open = self._zero_open, False
        zero_extents: list[tuple[int, int]] = []
        undecided = hi if final else tail_block    # data past this may still turn out zero
        for start, end in self._zero_runs(buf, first, hi):
            continuing = was_open and start == lo
            if end - start >= ZERO_MIN_RUN or continuing:
                zero_extents.append((start, end))
            elif end == tail_block and not final:
                undecided = start
        extents: list[tuple[int, int, int]] = []
        pos = lo
        for zs, ze in zero_extents:
            if zs > pos:
                self._cut_data(buf, pos, zs, extents, lo)
            extents.append((ZERO, zs - lo, ze - zs))
            pos = ze
        consumed = hi
        if not final and zero_extents and pos == tail_block:
            self._zero_open = True             # the run may go on in the next call
            consumed = tail_block
        elif pos < hi:
            if final:
                self._cut_data(buf, pos, hi, extents, lo)
            else:
                consumed = self._cut_open(buf, pos, undecided, extents, lo)
        return Cut(extents, consumed - lo)

    @staticmethod
    def _zero_runs(buf: bytearray, first: int, hi: int) -> list[tuple[int, int]]:
        """Maximal runs [start, end) of aligned all-zero blocks in buf[first:hi]."""
        runs = []
        i = first
        while i + ZERO_BLOCK <= hi:
            found = buf.find(_ZEROS, i, hi)
            if found < 0:
                break
            a = found + (first - found) % ZERO_BLOCK
            j = a
            while j + ZERO_BLOCK <= hi and buf.startswith(_ZEROS, j):
                j += ZERO_BLOCK
            if j > a:
                runs.append((a, j))
                i = j + 1
            else:
                i = a + 1
        return runs

    def _cut_data(self, buf: bytearray, start: int, end: int, out: list, lo: int) -> None:
        for ch in self._cdc.cut_buf(memoryview(buf)[start:end]):
            out.append((DATA, start - lo + ch.offset, ch.length))

    def _cut_open(self, buf: bytearray, start: int, limit: int, out: list, lo: int) -> int:
        """Cut a region whose end is not known yet (it is at least `limit`); returns where
        the first undecided chunk starts."""
        if limit - start < MAX_SIZE:
            return start
        for ch in self._cdc.cut_buf(memoryview(buf)[start:limit]):
            if limit - (start + ch.offset) < MAX_SIZE:
                return start + ch.offset
            out.append((DATA, start - lo + ch.offset, ch.length))
        return limit


def cut_all(data: bytes | bytearray) -> list[tuple[int, int, int]]:
    """Extents of a whole buffer in one call (for tests and tools)."""
    buf = data if isinstance(data, bytearray) else bytearray(data)
    return Chunker().cut(buf, 0, len(buf), 0, True).extents
