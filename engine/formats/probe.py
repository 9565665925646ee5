# The base of every format probe and the byte-reading helpers they share.
# A probe is told, in stream order: the head (the first HEAD_BYTES of the stream, fewer if the
# stream is shorter), each region it asked for (bytes, or None when the stream ended before
# the region or the region had already passed), and the end (total size, last TAIL_BYTES).
# Invariants: probes never raise on any input (every read is bounds-checked); they keep only
# parsed fields, never buffers; `matched` means the format's signature is present, and a
# matched probe reports everything unsafe it saw as Problems.
from __future__ import annotations

import struct
from collections.abc import Callable

from tessera.engine.formats.verdict import Problem

HEAD_BYTES = 64 * 1024      # the first bytes every probe sees
TAIL_BYTES = 1536           # the last bytes (vmdk streamOptimized footer, vhd footer)
REGION_MAX = 1 << 20        # the largest region a probe may ask for

# want(key, offset, length): ask the stream for [offset, offset + length)
Want = Callable[[str, int, int], None]


class Probe:
    name = ""

    def __init__(self) -> None:
        self.matched = False
        self.virtual_size: int | None = None
        self.problems: list[Problem] = []

    def on_head(self, head: bytes, want: Want) -> None:
        """The first HEAD_BYTES (all of the stream if it is shorter)."""

    def on_region(self, key: str, data: bytes | None, want: Want) -> None:
        """A region asked for with want(); None if the stream cannot provide it."""

    def on_end(self, total: int, tail: bytes) -> None:
        """The stream ended after `total` bytes; `tail` holds its last TAIL_BYTES."""

    def problem(self, check: str, detail: str) -> None:
        self.problems.append(Problem(check, detail))


def unpack(fmt: str, buf: bytes, offset: int = 0) -> tuple | None:
    """struct.unpack_from, or None when `buf` is too short."""
    if offset < 0 or offset + struct.calcsize(fmt) > len(buf):
        return None
    return struct.unpack_from(fmt, buf, offset)


def one(fmt: str, buf: bytes, offset: int = 0) -> int | None:
    got = unpack(fmt, buf, offset)
    return None if got is None else got[0]
