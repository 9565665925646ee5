# VHDX: owns the file identifier at offset 0 ("vhdxfile"), the region table at 192 KiB,
# the metadata table its metadata-region entry points to, and two metadata items: Virtual
# Disk Size (the virtual size) and File Parameters (HasParent marks a differencing disk,
# which names a parent file: refused; so is a Parent Locator item).
# Little-endian; GUIDs in Microsoft's mixed-endian byte order. Regions live at 1 MiB or
# beyond; a metadata region or item that the stream had already passed is malformed.
from __future__ import annotations

import uuid

from tessera.engine.formats.probe import Probe, Want, one, unpack

IDENT = b"vhdxfile"
REGION_TABLE = 192 * 1024
TABLE_BYTES = 64 * 1024
ENTRIES_MAX = 2047
HEADER_AREA = 1024 * 1024
REGION_SIG = b"regi"
METADATA_SIG = b"metadata"
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C").bytes_le
HAS_PARENT = 1 << 1


class VhdxProbe(Probe):
    name = "vhdx"

    def __init__(self) -> None:
        super().__init__()
        self._metadata_at = 0
        self._waiting: set[str] = set()

    def on_head(self, head: bytes, want: Want) -> None:
        if head[:8] != IDENT:
            return
        self.matched = True
        self._ask(want, "regions", REGION_TABLE, TABLE_BYTES)

    def _ask(self, want: Want, key: str, offset: int, length: int) -> None:
        self._waiting.add(key)
        want(key, offset, length)

    def on_region(self, key: str, data: bytes | None, want: Want) -> None:
        self._waiting.discard(key)
        if data is None:
            self.problem("header", f"vhdx {key} missing or out of place")
        elif key == "regions":
            self._regions(data, want)
        elif key == "metadata":
            self._metadata(data, want)
        elif key == "size":
            self.virtual_size = one("<Q", data)
        elif key == "parameters":
            flags = one("<I", data, 4)
            if flags is not None and flags & HAS_PARENT:
                self.problem("parent", "differencing vhdx names a parent disk")

    def _regions(self, table: bytes, want: Want) -> None:
        count = one("<I", table, 8)
        if table[:4] != REGION_SIG or count is None or count > ENTRIES_MAX:
            self.problem("header", "invalid vhdx region table")
            return
        for i in range(count):
            entry = unpack("<16sQI", table, 16 + 32 * i)
            if entry is None:
                break
            guid, offset, _length = entry
            if guid == METADATA_REGION:
                if offset < HEADER_AREA:
                    self.problem("header", "vhdx metadata region inside the header area")
                    return
                self._metadata_at = offset
                self._ask(want, "metadata", offset, TABLE_BYTES)
                return
        self.problem("header", "vhdx has no metadata region")

    def _metadata(self, table: bytes, want: Want) -> None:
        count = one("<H", table, 10)
        if table[:8] != METADATA_SIG or count is None or count > ENTRIES_MAX:
            self.problem("header", "invalid vhdx metadata table")
            return
        found_size = False
        for i in range(count):
            entry = unpack("<16sII", table, 32 + 32 * i)
            if entry is None:
                break
            guid, offset, _length = entry
            if guid == VIRTUAL_DISK_SIZE and not found_size:
                found_size = True
                self._ask(want, "size", self._metadata_at + offset, 8)
            elif guid == FILE_PARAMETERS and "parameters" not in self._waiting:
                self._ask(want, "parameters", self._metadata_at + offset, 8)
            elif guid == PARENT_LOCATOR:
                self.problem("parent", "vhdx names a parent locator")
        if not found_size:
            self.problem("header", "vhdx has no virtual disk size")

    def on_end(self, total: int, tail: bytes) -> None:
        if self.matched and self.virtual_size is None and not self.problems:
            self.problem("header", "vhdx virtual disk size not found")
