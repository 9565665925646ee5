# VHD (qemu's "vpc"): owns the 512-byte footer, found as a copy at offset 0 (dynamic disks)
# or only as the last 512 bytes (fixed disks). Refuses differencing disks (they name a
# parent file). The virtual size follows qemu: CHS geometry, except for creators that
# write the real size (Hyper-V, disk2vhd, XenServer, newer qemu) or the maximal geometry.
# Big-endian footer: cookie 0 "conectix", creator_app 28, original_size 40,
# current_size 48, geometry 56 (cylinders u16, heads u8, sectors u8), disk_type 60.
from __future__ import annotations

from tessera.engine.formats.probe import Probe, Want, unpack

COOKIE = b"conectix"
FOOTER = 512
FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
SIZE_CREATORS = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\x00")
MAX_GEOMETRY = 65535 * 16 * 255


class VhdProbe(Probe):
    name = "vhd"

    def __init__(self) -> None:
        super().__init__()
        self.fixed = False   # matched by the trailing footer only

    def on_head(self, head: bytes, want: Want) -> None:
        if head[:8] == COOKIE:
            self.matched = True
            self._footer(head[:FOOTER], (DYNAMIC, DIFFERENCING))

    def on_end(self, total: int, tail: bytes) -> None:
        if self.matched or total < FOOTER or tail[-FOOTER:][:8] != COOKIE:
            return
        self.matched = self.fixed = True
        self._footer(tail[-FOOTER:], (FIXED,))

    def _footer(self, footer: bytes, expected: tuple[int, ...]) -> None:
        fields = unpack(">28x4s8xQQHBBI", footer)
        if fields is None:
            self.problem("header", "truncated vhd footer")
            return
        creator, _original, current, cylinders, heads, sectors, disk_type = fields
        if disk_type == DIFFERENCING:
            self.problem("parent", "differencing vhd names a parent disk")
        elif disk_type not in expected:
            self.problem("header", f"vhd disk type {disk_type} does not fit its layout")
        chs = cylinders * heads * sectors
        if creator in SIZE_CREATORS or chs == MAX_GEOMETRY:
            self.virtual_size = current // 512 * 512
        else:
            self.virtual_size = chs * 512
