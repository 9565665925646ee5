# Segment files: append-only files under DATA/segments/ holding chunk bytes.
# Invariants:
# - A segment is `NNNNNNNN.seg` (8 decimal digits). Bytes are appended in groups:
#   [group header | N record headers | N payloads]; each record header names its chunk id,
#   length and payload offset and carries its own checksum, and the payloads of one group are
#   contiguous so readers can send adjacent chunks as one view. Format: docs/formats.md.
# - Only the holder of a Lease appends to a segment; each writable segment has at most one
#   lease. A segment whose size passed `segment_size` is full and never leased again.
# - Readers get memoryviews of read-only mmaps, or a read-only file object of the same
#   segment (for sendfile). Nothing is ever closed under a reader: a mapping or file object
#   dropped from the cache (or whose file was unlinked by compaction) stays valid for whoever
#   still holds a view or a reference of it (the file closes when the last one goes).
# - What the index knows (committed length per segment) is passed in by the chunk store;
#   `recover` truncates writable segments to it and removes files the index does not know.
from __future__ import annotations

import errno
import io
import mmap
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tessera.engine.errors import CorruptData, StorageFull

GROUP = struct.Struct(">4sIQI")        # magic, record count, group length, crc32 of the rest
RECORD = struct.Struct(">4sIQ32sI")    # magic, payload length, payload offset, chunk id, crc32
GROUP_MAGIC = b"TSG1"
RECORD_MAGIC = b"TSR1"
MAX_MAPPINGS = 512
ALIGN = 4096                           # groups start and end on 4 KiB boundaries
_PAGE = mmap.PAGESIZE
_PAD = bytes(ALIGN)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def segment_name(number: int) -> str:
    return f"{number:08d}.seg"


def parse_segment_name(name: str) -> int | None:
    if len(name) == 12 and name.endswith(".seg") and name[:8].isdigit():
        return int(name[:8])
    return None


@dataclass(frozen=True)
class Placed:
    """Where one appended chunk landed."""
    segment: int
    offset: int        # payload offset
    length: int
    header: int        # record header offset
    group_end: int     # end of its group: a committed length covering it


@dataclass(frozen=True)
class RecordInfo:
    header: int
    offset: int
    length: int
    chunk_id: bytes


def pack_group(items: list[tuple[bytes, int]], start: int) -> tuple[bytes, list[tuple[int, int]]]:
    """Group header + record headers for chunks (id, length) appended at `start`; returns the
    header bytes and (header offset, payload offset) per chunk."""
    count = len(items)
    head_len = _align(GROUP.size + RECORD.size * count)
    total = _align(head_len + sum(length for _, length in items))
    parts = [b""]
    offsets = []
    payload = start + head_len
    for i, (chunk_id, length) in enumerate(items):
        body = RECORD_MAGIC + struct.pack(">IQ32s", length, payload, chunk_id)
        parts.append(body + struct.pack(">I", zlib.crc32(body)))
        offsets.append((start + GROUP.size + RECORD.size * i, payload))
        payload += length
    gbody = GROUP_MAGIC + struct.pack(">IQ", count, total)
    parts[0] = gbody + struct.pack(">I", zlib.crc32(gbody))
    header = b"".join(parts)
    return header + _PAD[:head_len - len(header)], offsets


def parse_record(raw: bytes | memoryview) -> RecordInfo | None:
    """A record header read back, or None if it is not a valid one."""
    if len(raw) < RECORD.size:
        return None
    magic, length, offset, chunk_id, crc = RECORD.unpack(bytes(raw[:RECORD.size]))
    if magic != RECORD_MAGIC or zlib.crc32(bytes(raw[:RECORD.size - 4])) != crc:
        return None
    return RecordInfo(-1, offset, length, chunk_id)


class SegmentFile:
    def __init__(self, number: int, path: Path, fd: int, size: int, direct: bool) -> None:
        self.number = number
        self.path = path
        self.fd = fd
        self.size = size
        self.direct = direct      # O_DIRECT: writes bypass the page cache (see _write_group)


@dataclass
class Lease:
    """Exclusive right to append to writable segments for one writer (an ingest, a
    compaction). `spans` maps each segment touched to (start, end) of this lease's bytes."""
    owner: "Segments"
    current: SegmentFile | None = None
    spans: dict[int, list[int]] = field(default_factory=dict)
    created: bool = False
    released: bool = False

    def append(self, items: list[tuple[bytes, memoryview]]) -> list[Placed]:
        return self.owner._append(self, items)


class Segments:
    def __init__(self, directory: Path, *, segment_size: int, durable: bool,
                 max_stored_bytes: int | None = None) -> None:
        self.dir = directory
        self.segment_size = segment_size
        self.durable = durable
        self.max_stored_bytes = max_stored_bytes
        self._lock = threading.Lock()
        self._files: dict[int, SegmentFile] = {}      # segments open for writing
        self._available: set[int] = set()            # writable, not leased, not full
        self._busy: set[int] = set()                 # leased or claimed by compaction
        self._sizes: dict[int, int] = {}              # every known segment -> bytes on disk
        self._maps: OrderedDict[int, tuple[mmap.mmap, memoryview, io.FileIO]] = OrderedDict()
        self._next = 1
        self._stages: list[mmap.mmap] = []

    # -- opening --------------------------------------------------------------------------
    def recover(self, known: dict[int, tuple[int, bool]]) -> dict[str, int]:
        """Bring the files in line with the index: `known` maps segment -> (committed length,
        sealed). Writable segments are truncated to their committed length; files the index
        does not know are removed. Returns counts of what was done."""
        self.dir.mkdir(parents=True, exist_ok=True)
        done = {"truncated": 0, "truncated_bytes": 0, "removed": 0, "missing": 0}
        seen = set()
        for entry in os.scandir(self.dir):
            number = parse_segment_name(entry.name)
            if number is None:
                continue
            self._next = max(self._next, number + 1)
            if number not in known:
                os.unlink(entry.path)
                done["removed"] += 1
                continue
            seen.add(number)
            length, sealed = known[number]
            size = entry.stat().st_size
            if not sealed and size > length:
                with open(entry.path, "r+b") as fh:
                    fh.truncate(length)
                    if self.durable:
                        os.fsync(fh.fileno())
                done["truncated"] += 1
                done["truncated_bytes"] += size - length
                size = length
            self._sizes[number] = size
            if not sealed and size < self.segment_size:
                self._available.add(number)
        for number in known:
            self._next = max(self._next, number + 1)
            if number not in seen:
                done["missing"] += 1
        if self.durable and (done["removed"] or done["truncated"]):
            _fsync_dir(self.dir)
        return done

    # -- writing --------------------------------------------------------------------------
    def lease(self) -> Lease:
        return Lease(self)

    def _switch(self, lease: Lease) -> SegmentFile:
        with self._lock:
            while self._available:
                number = self._available.pop()
                if self._sizes.get(number, 0) < self.segment_size:
                    break
            else:
                number = self._next
                self._next += 1
                self._sizes[number] = 0
                lease.created = True
            self._busy.add(number)
            sf = self._files.get(number)
        if sf is None:
            path = self.dir / segment_name(number)
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            direct = hasattr(os, "O_DIRECT")
            try:
                fd = os.open(path, flags | (os.O_DIRECT if direct else 0), 0o644)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                direct = False                       # e.g. a filesystem without O_DIRECT
                fd = os.open(path, flags, 0o644)
            sf = SegmentFile(number, path, fd, os.fstat(fd).st_size, direct)
            with self._lock:
                self._files[number] = sf
        lease.current = sf
        lease.spans.setdefault(number, [sf.size, sf.size])
        return sf

    def _append(self, lease: Lease, items: list[tuple[bytes, memoryview]]) -> list[Placed]:
        sf = lease.current
        if sf is None or sf.size >= self.segment_size:
            sf = self._switch(lease)
        start = sf.size
        header, offsets = pack_group([(cid, len(mv)) for cid, mv in items], start)
        used = len(header) + sum(len(mv) for _, mv in items)
        total = _align(used)
        with self._lock:
            if self.max_stored_bytes is not None and \
                    sum(self._sizes.values()) + total > self.max_stored_bytes:
                raise StorageFull("the store is full (max_stored_bytes reached)")
            self._sizes[sf.number] = start + total
        try:
            self._write_group(sf, [header, *(mv for _, mv in items), _PAD[:total - used]],
                              start, total)
        except OSError as exc:
            os.ftruncate(sf.fd, start)
            with self._lock:
                self._sizes[sf.number] = start
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("no space left on the data volume") from None
            raise
        sf.size = start + total
        lease.spans[sf.number][1] = sf.size
        end = sf.size
        return [Placed(sf.number, payload, len(mv), hdr, end)
                for (hdr, payload), (_, mv) in zip(offsets, items)]

    def _write_group(self, sf: SegmentFile, parts: list, start: int, total: int) -> None:
        """One write per group. With O_DIRECT the parts are first copied into a reused,
        page-aligned staging buffer: on this class of VM, filling fresh page-cache pages
        costs far more CPU than the copy (and the page cache keeps no second copy)."""
        if sf.direct and start % ALIGN:
            self._stop_direct(sf)                # cannot happen with this format; be safe
        if not sf.direct:
            _pwritev_all(sf.fd, parts, start, total)
            return
        stage = self._take_stage(total)
        try:
            view = memoryview(stage)
            pos = 0
            for part in parts:
                n = len(part)
                view[pos:pos + n] = part
                pos += n
            try:
                _pwritev_all(sf.fd, [view[:total]], start, total)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._stop_direct(sf)            # the device refused the alignment
                _pwritev_all(sf.fd, [view[:total]], start, total)
            view.release()
        finally:
            self._give_stage(stage)

    def _stop_direct(self, sf: SegmentFile) -> None:
        fd = os.open(sf.path, os.O_RDWR | os.O_CLOEXEC)
        old, sf.fd, sf.direct = sf.fd, fd, False
        os.close(old)

    def _take_stage(self, size: int) -> mmap.mmap:
        with self._lock:
            for i, stage in enumerate(self._stages):
                if len(stage) >= size:
                    return self._stages.pop(i)
        return mmap.mmap(-1, max(_align(size), 5 * 1024 * 1024))

    def _give_stage(self, stage: mmap.mmap) -> None:
        with self._lock:
            if len(self._stages) < 8:
                self._stages.append(stage)

    def sync(self, numbers: set[int], *, directory: bool = False) -> None:
        if not self.durable:
            return
        for number in sorted(numbers):
            with self._lock:
                sf = self._files.get(number)
            if sf is not None:
                os.fsync(sf.fd)
                continue
            try:                                   # a full segment whose fd was closed
                fd = os.open(self.dir / segment_name(number), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if directory:
            _fsync_dir(self.dir)

    def rollback(self, lease: Lease) -> None:
        """Cut every segment of `lease` back to where the lease started (its bytes were never
        referenced by anyone)."""
        for number, (start, _end) in lease.spans.items():
            with self._lock:
                sf = self._files.get(number)
            if sf is not None and sf.size > start:
                os.ftruncate(sf.fd, start)
                sf.size = start
                with self._lock:
                    self._sizes[number] = start

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        full = []
        with self._lock:
            for number in lease.spans:
                self._busy.discard(number)
                sf = self._files.get(number)
                if sf is not None and sf.size < self.segment_size:
                    self._available.add(number)
                elif sf is not None and number not in self._busy:
                    full.append(self._files.pop(number))   # never written again
        for sf in full:
            os.close(sf.fd)
        lease.current = None

    def claim(self, number: int) -> bool:
        """Take a segment that nobody is writing for compaction (False if it is busy)."""
        with self._lock:
            if number in self._busy:
                return False
            self._busy.add(number)
            self._available.discard(number)
            return True

    def unclaim(self, number: int) -> None:
        with self._lock:
            self._busy.discard(number)
            sf = self._files.get(number)
            if number in self._sizes and (sf is None or sf.size < self.segment_size):
                self._available.add(number)

    def remove(self, number: int) -> None:
        """Unlink a segment (after the index stopped pointing into it)."""
        with self._lock:
            sf = self._files.pop(number, None)
            self._maps.pop(number, None)
            self._sizes.pop(number, None)
            self._available.discard(number)
            self._busy.discard(number)
        if sf is not None:
            os.close(sf.fd)
        try:
            os.unlink(self.dir / segment_name(number))
        except FileNotFoundError:
            pass
        if self.durable:
            _fsync_dir(self.dir)

    def is_full(self, number: int) -> bool:
        with self._lock:
            return self._sizes.get(number, 0) >= self.segment_size

    def is_busy(self, number: int) -> bool:
        with self._lock:
            return number in self._busy

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def sizes(self) -> dict[int, int]:
        with self._lock:
            return dict(self._sizes)

    # -- reading --------------------------------------------------------------------------
    def base(self, number: int, end: int) -> memoryview:
        """A read-only view of the whole segment that covers at least [0, end)."""
        return self._mapping(number, end)[1]

    def file(self, number: int, end: int) -> io.FileIO:
        """A read-only file object of the segment (at least `end` bytes long), the one
        behind base()'s mapping; it stays open while anyone references it."""
        return self._mapping(number, end)[2]

    def _mapping(self, number: int, end: int) -> tuple[mmap.mmap, memoryview, io.FileIO]:
        with self._lock:
            cached = self._maps.get(number)
            if cached is not None and len(cached[1]) >= end:
                self._maps.move_to_end(number)
                return cached
        path = self.dir / segment_name(number)
        try:
            fh = io.FileIO(os.open(path, os.O_RDONLY | os.O_CLOEXEC), "rb", closefd=True)
        except FileNotFoundError:
            raise SegmentGone(number) from None
        try:
            size = os.fstat(fh.fileno()).st_size
            if size < end or size == 0:
                raise CorruptData(f"segment {number} is shorter ({size}) than the index says ({end})")
            mm = mmap.mmap(fh.fileno(), size, prot=mmap.PROT_READ)
        except BaseException:
            fh.close()
            raise
        entry = (mm, memoryview(mm), fh)
        with self._lock:
            self._maps[number] = entry
            self._maps.move_to_end(number)
            while len(self._maps) > MAX_MAPPINGS:
                self._maps.popitem(last=False)
        return entry

    def view(self, number: int, offset: int, length: int) -> memoryview:
        return self.base(number, offset + length)[offset:offset + length]

    def willneed(self, number: int, offset: int, length: int) -> None:
        with self._lock:
            cached = self._maps.get(number)
        if cached is None or not hasattr(mmap, "MADV_WILLNEED"):
            return
        start = offset - offset % _PAGE
        stop = min(offset + length, len(cached[1]))
        if stop > start:
            cached[0].madvise(mmap.MADV_WILLNEED, start, stop - start)

    def records(self, number: int, end: int) -> Iterator[RecordInfo]:
        """Walk the groups of a segment up to `end`; raises CorruptData at a bad header."""
        if end == 0:
            return
        base = self.base(number, end)
        pos = 0
        while pos < end:
            raw = bytes(base[pos:pos + GROUP.size])
            if len(raw) < GROUP.size:
                raise CorruptData(f"segment {number}: truncated group header at {pos}")
            magic, count, total, crc = GROUP.unpack(raw)
            if magic != GROUP_MAGIC or zlib.crc32(raw[:-4]) != crc or pos + total > end:
                raise CorruptData(f"segment {number}: bad group header at {pos}")
            for i in range(count):
                hdr = pos + GROUP.size + RECORD.size * i
                info = parse_record(base[hdr:hdr + RECORD.size])
                if info is None:
                    raise CorruptData(f"segment {number}: bad record header at {hdr}")
                yield RecordInfo(hdr, info.offset, info.length, info.chunk_id)
            pos += total

    def close(self) -> None:
        with self._lock:
            files = list(self._files.values())
            self._files.clear()
            self._maps.clear()
        for sf in files:
            os.close(sf.fd)


class SegmentGone(Exception):
    """The segment was unlinked (compacted) after its location was read: look it up again."""

    def __init__(self, number: int) -> None:
        super().__init__(f"segment {number} is gone")
        self.number = number


def _pwritev_all(fd: int, parts: list, offset: int, total: int) -> None:
    written = os.pwritev(fd, parts, offset) if len(parts) > 1 else os.pwrite(fd, parts[0], offset)
    if written == total:
        return
    # short write: finish piece by piece
    flat = memoryview(b"".join(bytes(p) for p in parts))
    while written < total:
        n = os.pwrite(fd, flat[written:], offset + written)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        written += n


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
