# The hybrid logical clock that stamps metadata changes (last-writer-wins per image).
# Invariants: a stamp is one u64: (milliseconds << 14 | counter) << 8 | node index. The
# stamps one clock hands out strictly increase; after merge(remote) they exceed `remote`, so
# a change made after seeing another always wins over it; the low byte makes the stamps of
# two nodes always differ, so concurrent changes are ordered the same way on every node.
from __future__ import annotations

import threading
import time
from collections.abc import Callable

_COUNTER_BITS = 14
_NODE_BITS = 8
MAX_NODES = 1 << _NODE_BITS


def stamp_time(stamp: int) -> float:
    """Seconds since the epoch of a stamp's physical part."""
    return (stamp >> (_COUNTER_BITS + _NODE_BITS)) / 1000.0


def stamp_at(seconds: float) -> int:
    """The lowest stamp any clock hands out at wall time `seconds` (a bound for `<`)."""
    return int(seconds * 1000) << (_COUNTER_BITS + _NODE_BITS)


class HybridClock:
    def __init__(self, node_index: int = 0, wall: Callable[[], float] = time.time) -> None:
        if not 0 <= node_index < MAX_NODES:
            raise ValueError(f"node index {node_index} out of range")
        self._node = node_index
        self._wall = wall
        self._last = 0                       # the hybrid part: ms << 14 | counter
        self._lock = threading.Lock()        # the writer thread and the event loop both stamp

    def _physical(self) -> int:
        return int(self._wall() * 1000) << _COUNTER_BITS

    def now(self) -> int:
        with self._lock:
            self._last = max(self._physical(), self._last + 1)
            return self._last << _NODE_BITS | self._node

    def merge(self, remote: int) -> int:
        with self._lock:
            self._last = max(self._physical(), self._last + 1, (remote >> _NODE_BITS) + 1)
            return self._last << _NODE_BITS | self._node

    def __call__(self, remote: int | None = None) -> int:
        """The replica facade's clock: now() for a local change, merge() for a remote one."""
        return self.now() if remote is None else self.merge(remote)
