# Manifests: the ordered extents of one image, stored in the `manifests` database.
# Invariants:
# - An extent is (chunk id, length) for data or (None, length) for zeros; adjacent zero
#   extents are merged; lengths are > 0; the lengths sum to the image size.
# - Layout (docs/formats.md): key = 16 image-id bytes -> head {v, size, extents, zero, pages};
#   key = 16 image-id bytes + page number u32 BE -> [first offset, [lengths], [ids or nil]],
#   PAGE_EXTENTS extents per page. `pages` in the head holds the first logical offset of
#   every page, so an offset is found by bisection over pages, then within the page.
# - While an upload runs, extents are kept packed (40 bytes each) in an ExtentLog, never as
#   one Python object per extent.
from __future__ import annotations

import struct
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from tessera.engine.errors import InvalidInput
from tessera.engine.index import pack, unpack

MANIFEST_VERSION = 1
PAGE_EXTENTS = 1024
_ENTRY = struct.Struct(">32sQ")
_NO_ID = bytes(32)


def image_key(image_id: str) -> bytes:
    try:
        return uuid.UUID(image_id).bytes
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(f"image id {image_id!r:.80} is not a UUID") from None


def page_key(image: bytes, page: int) -> bytes:
    return image + struct.pack(">I", page)


class ExtentLog:
    """Extents of an upload in arrival order, packed; zero runs merged."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.size = 0
        self.zero_bytes = 0
        self._last_zero = False

    def add_zero(self, length: int) -> None:
        self.size += length
        self.zero_bytes += length
        if self._last_zero:
            cid, prev = _ENTRY.unpack_from(self._buf, len(self._buf) - _ENTRY.size)
            _ENTRY.pack_into(self._buf, len(self._buf) - _ENTRY.size, cid, prev + length)
        else:
            self._buf += _ENTRY.pack(_NO_ID, length)
            self._last_zero = True

    def add_data(self, chunk_id: bytes, length: int) -> None:
        self.size += length
        self._buf += _ENTRY.pack(chunk_id, length)
        self._last_zero = False

    def __len__(self) -> int:
        return len(self._buf) // _ENTRY.size

    def __iter__(self) -> Iterator[tuple[bytes | None, int]]:
        for cid, length in _ENTRY.iter_unpack(self._buf):
            yield (None if cid == _NO_ID else cid), length

    def counts(self) -> Counter:
        return Counter(cid for cid, _ in self if cid is not None)


@dataclass(frozen=True)
class Head:
    size: int
    extents: int
    zero: int
    pages: list[int]

    @classmethod
    def load(cls, raw: bytes) -> "Head":
        d = unpack(raw)
        return cls(d["size"], d["extents"], d["zero"], d["pages"])


@dataclass(frozen=True)
class Page:
    first: int
    lengths: list[int]
    ids: list[bytes | None]

    @property
    def starts(self) -> list[int]:
        return list(accumulate(self.lengths[:-1], initial=self.first)) if self.lengths else []

    def find(self, offset: int) -> int:
        """Index of the extent holding `offset` (which must be inside this page)."""
        return max(0, bisect_right(self.starts, offset) - 1)


def write(txn: Any, db: Any, image: bytes, log: ExtentLog) -> None:
    pages = []
    lengths: list[int] = []
    ids: list[bytes | None] = []
    offset = first = 0
    for cid, length in log:
        if not lengths:
            first = offset
        lengths.append(length)
        ids.append(cid)
        offset += length
        if len(lengths) == PAGE_EXTENTS:
            txn.put(page_key(image, len(pages)), pack([first, lengths, ids]), db=db)
            pages.append(first)
            lengths, ids = [], []
    if lengths:
        txn.put(page_key(image, len(pages)), pack([first, lengths, ids]), db=db)
        pages.append(first)
    head = {"v": MANIFEST_VERSION, "size": log.size, "extents": len(log),
            "zero": log.zero_bytes, "pages": pages}
    txn.put(image, pack(head), db=db)


def read_head(txn: Any, db: Any, image: bytes) -> Head | None:
    raw = txn.get(image, db=db)
    return None if raw is None else Head.load(raw)


def read_page(txn: Any, db: Any, image: bytes, page: int) -> Page | None:
    raw = txn.get(page_key(image, page), db=db)
    if raw is None:
        return None
    first, lengths, ids = unpack(raw)
    return Page(first, lengths, ids)


def page_for(head: Head, offset: int) -> int:
    return max(0, bisect_right(head.pages, offset) - 1)


def counts(txn: Any, db: Any, image: bytes, head: Head) -> Counter:
    total: Counter = Counter()
    for number in range(len(head.pages)):
        page = read_page(txn, db, image, number)
        if page is not None:
            total.update(cid for cid in page.ids if cid is not None)
    return total


def delete(txn: Any, db: Any, image: bytes, head: Head) -> None:
    for number in range(len(head.pages)):
        txn.delete(page_key(image, number), db=db)
    txn.delete(image, db=db)
