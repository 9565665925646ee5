# ISO 9660 and UDF: owns the volume descriptor set that starts at 32 KiB (after the 32 KiB
# system area, which may legitimately hold an MBR for hybrid ISOs) and is scanned inside
# the head. A "CD001" descriptor makes it ISO 9660, whose primary volume descriptor gives
# the virtual size; an "NSR02"/"NSR03" descriptor makes it UDF (size unknown here).
# No safety check of its own; what hides in the system area is caught by the other probes.
from __future__ import annotations

from tessera.engine.formats.probe import Probe, Want, one

START = 32 * 1024
SECTOR = 2048
PRIMARY, TERMINATOR = 1, 255


class IsoProbe(Probe):
    name = "iso"

    def on_head(self, head: bytes, want: Want) -> None:
        for at in range(START, len(head) - SECTOR + 1, SECTOR):
            kind, ident = head[at], head[at + 1:at + 6]
            if ident == b"CD001":
                self.matched = True
                if kind == PRIMARY and self.virtual_size is None:
                    blocks = one("<I", head, at + 80) or 0
                    block_size = one("<H", head, at + 128) or 0
                    self.virtual_size = blocks * block_size or None
                if kind == TERMINATOR:
                    return
            elif ident in (b"NSR02", b"NSR03"):
                self.matched = True
            elif ident not in (b"BEA01", b"TEA01", b"BOOT2", b"CDW02"):
                return
