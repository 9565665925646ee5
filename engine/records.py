# Image and member records: the frozen values the engine stores and hands out, and their
# msgpack encoding.
# Invariants:
# - A record on disk is a msgpack array `[version, field, field, ...]` in the order of the
#   dataclass fields (docs/formats.md, "Image records"); new fields are only ever appended,
#   so older records decode with the new fields' defaults.
# - Decoding is on the listing hot path: it fills the instance dict directly instead of going
#   through the frozen dataclass __init__ (about 20x cheaper for 22 fields).
# - Ids are canonical lower-case hyphenated UUID strings; keys use their 16 raw bytes.
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import msgpack

RECORD_VERSION = 1

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID_RE.match(value) is not None


def id_key(image_id: str) -> bytes:
    """The 16-byte LMDB key of a canonical image id (the caller validated it)."""
    return bytes.fromhex(image_id.replace("-", ""))


def id_from_key(key: bytes) -> str:
    h = key.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@dataclass(frozen=True)
class ImageRecord:
    id: str
    name: str | None
    status: str
    visibility: str
    protected: bool
    os_hidden: bool
    checksum: str | None
    os_hash_algo: str | None
    os_hash_value: str | None
    size: int | None
    virtual_size: int | None
    disk_format: str | None
    container_format: str | None
    min_disk: int
    min_ram: int
    owner: str | None
    created_at: float
    updated_at: float
    tags: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)  # treat as read-only
    blake3: str | None = None
    stores: tuple[str, ...] = ()
    # Glance's image locations (engine/locations.py): (url, metadata) pairs, the first the
    # origin reads come from; metadata is a read-only mapping, e.g. {"store": "web"}
    locations: tuple[tuple[str, Mapping[str, Any]], ...] = ()

    def evolve(self, **changes: Any) -> "ImageRecord":
        return replace(self, **changes)


@dataclass(frozen=True)
class MemberRecord:
    image_id: str
    member_id: str
    status: str
    created_at: float
    updated_at: float


IMAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ImageRecord))
_IMAGE_DEFAULTS: dict[str, Any] = {"tags": (), "properties": {}, "blake3": None, "stores": (),
                                   "locations": ()}
_N_IMAGE_FIELDS = len(IMAGE_FIELDS)


def encode_image(rec: ImageRecord) -> bytes:
    d = rec.__dict__
    row: list[Any] = [RECORD_VERSION]
    for name in IMAGE_FIELDS:
        value = d[name]
        if name == "properties":
            value = dict(value)
        elif name in ("tags", "stores"):
            value = list(value)
        elif name == "locations":
            value = [[url, dict(meta)] for url, meta in value]
        row.append(value)
    return msgpack.packb(row, use_bin_type=True)


def decode_image(raw: bytes) -> ImageRecord:
    row = msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=False)
    rec = object.__new__(ImageRecord)
    values = row[1:]
    if len(values) == _N_IMAGE_FIELDS:
        rec.__dict__.update(zip(IMAGE_FIELDS, values))
    else:  # an older, shorter record: the appended fields take their defaults
        data = dict(zip(IMAGE_FIELDS, values))
        for name in IMAGE_FIELDS[len(values):]:
            data[name] = _IMAGE_DEFAULTS[name]
        rec.__dict__.update(data)
    return rec


def encode_member(rec: MemberRecord) -> bytes:
    return msgpack.packb([RECORD_VERSION, rec.status, rec.created_at, rec.updated_at],
                         use_bin_type=True)


def decode_member(image_id: str, member_id: str, raw: bytes) -> MemberRecord:
    _, status, created_at, updated_at = msgpack.unpackb(raw, raw=False, use_list=False)
    return MemberRecord(image_id, member_id, status, created_at, updated_at)


class DecodeCache:
    """Decoded image records keyed by their encoded bytes, FIFO-bounded.

    Records are immutable and the key is the exact stored encoding, so a hit is always the
    current record for those bytes; listing pages of hot images skip msgpack and object
    construction. Used from the event-loop thread only (the writer decodes directly).
    """

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        # OrderedDict: popping the oldest is O(1) (a plain dict rescans deleted slots)
        self._map: OrderedDict[bytes, ImageRecord] = OrderedDict()

    def decode(self, raw: bytes) -> ImageRecord:
        rec = self._map.get(raw)
        if rec is None:
            rec = decode_image(raw)
            if len(self._map) >= self._size:
                self._map.popitem(last=False)
            self._map[raw] = rec
        return rec
