# The contract between a download and the places chunks this node does not hold can come
# from (other nodes, an object store, an image's HTTP origin). A source only obtains bytes;
# the engine (engine/fillreader.py) does everything else, once, for every source:
# - it asks the registered sources in order, each for what is still missing;
# - it hashes every returned chunk (BLAKE3 must equal the id: a source is never trusted),
#   drops a bad one and tells its source through `rejected`;
# - it serves the verified bytes from memory and keeps them with `cache` residency in the
#   background (bounded: a slow disk slows the download, never grows memory);
# - concurrent downloads on one node share one fetch of a chunk;
# - a chunk no source could provide raises Unavailable when the reader reaches it.
# Invariant: a source never writes to the chunk store on the read path.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Want:
    """One chunk a download lacks: its id, where it (first) occurs in the image, its length."""
    cid: bytes
    offset: int
    length: int


class ChunkSource(Protocol):
    name: str

    async def fetch(self, image: Any, wants: list[Want]) -> dict[bytes, Any]:
        """Raw bytes (any bytes-like object, e.g. views of one reply buffer: the engine
        hashes, serves and keeps them without copying) for those of `wants` this source
        could obtain, keyed by chunk id. A
        subset (or {} when the source does not apply to `image`, an ImageRecord) is fine;
        raise only for a failure worth ending the download for."""
        ...

    def rejected(self, image: Any, want: Want) -> None:
        """The bytes this source returned for `want` failed verification and were dropped."""
        ...
