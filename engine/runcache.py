# The run cache: what a download batch of an image resolved to (runs of segment bytes and
# zero runs), kept so the next pull of the same bytes skips the manifest and the chunk index.
# Hypervisors pull the same images over and over; a hit costs one dict lookup per 4 MiB.
# Invariants:
# - An entry holds only batches whose every chunk was trusted (verified within
#   trust_verified_for, or just now by the read that filled it); it expires when the first
#   of them leaves the window, so a hit never serves a chunk a read would have verified.
# - Entries name segments by number, never hold files open: a segment removed since is a miss.
# - `invalidate()` drops everything and refuses fills that started before it (a chunk was
#   quarantined or evicted): no entry outlives a change to which bytes are good.
# - Bounded: at most `max_entries` batches, least recently used dropped first.
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

MAX_ENTRIES = 65536          # about 256 GiB of images in 4 MiB batches, ~200 bytes each


class RunCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.generation = 0
        self.hits = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[Any, tuple[tuple, tuple, int]] = OrderedDict()

    def get(self, key: Any, now_ms: int) -> tuple[tuple, tuple] | None:
        """(runs, cache-resident chunk ids) of a batch, or None. A run is (segment, offset,
        length) or an int: that many zero bytes."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            runs, cached, expires_ms = entry
            if now_ms >= expires_ms:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return runs, cached

    def put(self, key: Any, runs: tuple, cached: tuple, expires_ms: int,
            generation: int) -> None:
        """Keep a batch's runs, unless the cache was invalidated since `generation` was read
        (the batch was resolved before the change)."""
        with self._lock:
            if generation != self.generation:
                return
            self._entries[key] = (runs, cached, expires_ms)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
