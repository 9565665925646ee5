# Planning a raw send of held chunks (a peer's read of this node's copies): the chunks'
# lengths in the order asked, and their bytes as runs of segment files (FileRange, what
# sendfile sends), adjacent chunks of one segment coalesced into one run.
# Invariants:
# - Nothing is read or hashed here: the receiver hashes every chunk it gets (a peer's read
#   is never trusted), so a run is never touched by this process on its way out.
# - The parts are in the order of `ids`, exactly the bytes of the chunks given a length,
#   and the file objects behind them stay open while the parts reference them (a segment
#   compacted away meanwhile is still read whole).
# - One short LMDB read transaction for the whole batch.
from __future__ import annotations

from typing import Any

from tessera.engine.index import unpack
from tessera.engine.reader import FileRange

RUN_CAP = 16 * 1024 * 1024      # bytes of one coalesced run (one sendfile call at most)


def plan(cs: Any, ids: list[bytes]) -> tuple[list[int | None], list[FileRange]]:
    """(length of each of `ids` or None where `cs` does not hold it, the held chunks' bytes
    as file runs in that order). Blocking (opens segment files): call from a worker thread."""
    with cs.index.read() as txn:
        where = [(raw and unpack(raw)) for raw in
                 (txn.get(cid, db=cs.db.chunks) for cid in ids)]
    lengths: list[int | None] = []
    parts: list[FileRange] = []
    last_seg = last_end = -1
    for e in where:
        if not e or e[0] is None:
            lengths.append(None)
            continue
        seg, off, n = e[0], e[1], e[2]
        try:
            file = cs.segments.file(seg, off + n)
        except Exception:                 # a segment gone or short: not held, for a peer
            lengths.append(None)
            continue
        lengths.append(n)
        if parts and seg == last_seg and off == last_end and parts[-1].file is file \
                and parts[-1].length + n <= RUN_CAP:
            parts[-1].length += n
        else:
            parts.append(FileRange(file, off, n))
        last_seg, last_end = seg, off + n
    return lengths, parts
