# Bucket digests for anti-entropy: 256 buckets by the first byte of a key (a chunk id or an
# image id), each the BLAKE2b of its sorted entries; two nodes whose sets are equal have
# equal digests, so a round between identical nodes costs 256 x 32 bytes per kind.
# Invariants: entries come in key order (LMDB cursors), so no sorting is needed; pure
# functions of the entries given.
from __future__ import annotations

import hashlib
from collections.abc import Iterable

BUCKETS = 256


def digests(entries: Iterable[tuple[bytes, int]]) -> list[bytes]:
    """Digests of (key, stamp) entries; stamp 0 for chunk ids."""
    hashers = [hashlib.blake2b(digest_size=32) for _ in range(BUCKETS)]
    for key, stamp in entries:
        h = hashers[key[0]]
        h.update(key)
        h.update(stamp.to_bytes(8, "big"))
    return [h.digest() for h in hashers]


def differing(mine: list[bytes], theirs: list[bytes]) -> list[int]:
    return [i for i in range(BUCKETS) if i >= len(theirs) or mine[i] != theirs[i]]
