# The hybrid logical clock that stamps metadata changes (last-writer-wins per image).
# Invariants: a stamp is one u64, (milliseconds << 16) | counter; the stamps one clock hands
# out strictly increase, and after merge(remote) they exceed `remote`, so a change made after
# seeing another always wins over it. Two nodes may stamp the same value for concurrent
# changes (same millisecond and counter); last-writer-wins then keeps whichever document a
# node had first, and anti-entropy leaves them as they are (a known limit: a node id
# tiebreak would settle it).
from __future__ import annotations

import threading
import time
from collections.abc import Callable

_COUNTER_BITS = 16


def stamp_time(stamp: int) -> float:
    """Seconds since the epoch of a stamp's physical part."""
    return (stamp >> _COUNTER_BITS) / 1000.0


class HybridClock:
    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._last = 0
        self._lock = threading.Lock()       # the writer thread and the event loop both stamp

    def now(self) -> int:
        with self._lock:
            physical = int(self._wall() * 1000) << _COUNTER_BITS
            self._last = max(physical, self._last + 1)
            return self._last

    def merge(self, remote: int) -> int:
        with self._lock:
            physical = int(self._wall() * 1000) << _COUNTER_BITS
            self._last = max(physical, self._last + 1, remote + 1)
            return self._last

    def __call__(self, remote: int | None = None) -> int:
        """The replica facade's clock: now() for a local change, merge() for a remote one."""
        return self.now() if remote is None else self.merge(remote)
