# Packs: the objects an s3 store writes. A pack is a run of whole segment groups (the local
# segment format, engine/segments.py): an upload's packs are byte ranges of the segments its
# lease wrote, uploaded as they are; a repacked pack is built from live chunks in the same
# format. A pack's object name is the BLAKE3 of its bytes. Layout: docs/formats.md.
# Invariants:
# - A pack starts and ends on a group boundary and is self-describing: walking its group and
#   record headers yields every chunk id with its payload offset inside the pack.
# - Packs are cut once they pass the target size, so an upload of N bytes makes about
#   N / target objects (plus one per segment boundary), never one object per chunk.
# - Nothing here touches the index or the network.
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from tessera.engine.errors import CorruptData
from tessera.engine.segments import (ALIGN, GROUP, GROUP_MAGIC, RECORD, Segments,
                                     pack_group, parse_record, segment_name)

PACKS_DIR = "packs/"


@dataclass(frozen=True, slots=True)
class PackChunk:
    cid: bytes
    offset: int          # payload offset inside the pack
    length: int


@dataclass
class PackPlan:
    """A byte range [start, end) of a local segment that becomes one object."""
    segment: int
    start: int
    end: int
    chunks: list[PackChunk] = field(default_factory=list)
    digest: bytes = b""

    @property
    def size(self) -> int:
        return self.end - self.start


def object_key(writer: str, digest: bytes) -> str:
    """The key of a pack written by `writer` (relative to the store's prefix, which the
    client prepends): packs/<writer>/<64 hex digits>."""
    return f"{PACKS_DIR}{writer}/{digest.hex()}"


def parse_object_key(writer: str, key: str) -> bytes | None:
    """The digest named by a key of `writer`'s packs, or None for any other key."""
    head = f"{PACKS_DIR}{writer}/"
    if not key.startswith(head):
        return None
    text = key[len(head):]
    if len(text) != 64:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _groups(data: memoryview):
    """(group start, group length, header block length, [RecordInfo]) of each group in
    `data`; CorruptData at a bad header."""
    pos, end = 0, len(data)
    while pos < end:
        raw = bytes(data[pos:pos + GROUP.size])
        if len(raw) < GROUP.size:
            raise CorruptData(f"truncated group header at {pos}")
        magic, count, total, crc = GROUP.unpack(raw)
        if magic != GROUP_MAGIC or zlib.crc32(raw[:-4]) != crc or total <= 0 or \
                pos + total > end:
            raise CorruptData(f"bad group header at {pos}")
        infos = []
        for i in range(count):
            hdr = pos + GROUP.size + RECORD.size * i
            info = parse_record(data[hdr:hdr + RECORD.size])
            if info is None:
                raise CorruptData(f"bad record header at {hdr}")
            infos.append(info)
        head_len = (GROUP.size + RECORD.size * count + ALIGN - 1) // ALIGN * ALIGN
        yield pos, total, head_len, infos
        pos += total


def walk_groups(data: memoryview, base: int = 0):
    """(group start, group end, [(chunk id, payload offset, length)]) of each group in
    `data`; payload offsets are relative to `data`, taken from the record headers, which
    carry absolute offsets in the file they were written for (`base` is where `data`
    starts in it)."""
    for pos, total, _head, infos in _groups(data):
        yield pos, pos + total, [(i.chunk_id, i.offset - base, i.length) for i in infos]


def plan_span(segments: Segments, number: int, start: int, end: int,
              target: int) -> list[PackPlan]:
    """Cut the groups in [start, end) of segment `number` into packs of about `target`."""
    if end <= start:
        return []
    view = segments.base(number, end)[start:end]
    plans: list[PackPlan] = []
    cur = PackPlan(number, start, start)
    for g_start, g_end, records in walk_groups(view, base=start):
        for cid, offset, length in records:
            cur.chunks.append(PackChunk(cid, offset - (cur.start - start), length))
        cur.end = start + g_end
        if cur.size >= target:
            plans.append(cur)
            cur = PackPlan(number, cur.end, cur.end)
    if cur.size > 0:
        plans.append(cur)
    return plans


def hash_plan(segments: Segments, plan: PackPlan) -> bytes:
    """The pack's name: BLAKE3 of its bytes (run in a worker thread)."""
    view = segments.base(plan.segment, plan.end)[plan.start:plan.end]
    plan.digest = blake3.blake3(view).digest()
    return plan.digest


def segment_path(segments: Segments, number: int) -> Path:
    return segments.dir / segment_name(number)


def build_pack(items: list[tuple[bytes, bytes | memoryview]],
               group_bytes: int = 4 * 1024 * 1024) -> tuple[bytes, list[PackChunk]]:
    """A pack made of `items` (chunk id, bytes) in the segment group format, with record
    headers carrying offsets inside the pack; returns (pack bytes, its chunks)."""
    parts: list[bytes | memoryview] = []
    chunks: list[PackChunk] = []
    pos = 0
    i = 0
    while i < len(items):
        group, size = [], 0
        while i < len(items) and (not group or size + len(items[i][1]) <= group_bytes):
            group.append(items[i])
            size += len(items[i][1])
            i += 1
        header, offsets = pack_group([(cid, len(data)) for cid, data in group], pos)
        parts.append(header)
        for (cid, data), (_hdr, payload) in zip(group, offsets):
            parts.append(data)
            chunks.append(PackChunk(cid, payload, len(data)))
        used = len(header) + size
        total = (used + ALIGN - 1) // ALIGN * ALIGN
        parts.append(bytes(total - used))
        pos += total
    return b"".join(parts), chunks


def pack_digest(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def read_pack(data: bytes | memoryview) -> list[PackChunk]:
    """Every chunk of a pack read back (either kind of pack). Record headers of an upload's
    pack carry offsets in the segment it was cut from, so payload offsets are computed from
    the layout instead (header block padded to 4 KiB, payloads contiguous in header order)."""
    out = []
    for pos, _total, head_len, infos in _groups(memoryview(data)):
        payload = pos + head_len
        for info in infos:
            out.append(PackChunk(info.chunk_id, payload, info.length))
            payload += info.length
    return out
