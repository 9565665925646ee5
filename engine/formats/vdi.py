# VirtualBox VDI: owns the 512-byte header at offset 0 (signature 0xbeda107f at 0x40,
# disk size at 0x170, little-endian). No safety check: the format cannot name other files
# that qemu would open.
from __future__ import annotations

from tessera.engine.formats.probe import Probe, Want, one

SIGNATURE = 0xBEDA107F


class VdiProbe(Probe):
    name = "vdi"

    def on_head(self, head: bytes, want: Want) -> None:
        if one("<I", head, 0x40) != SIGNATURE:
            return
        self.matched = True
        self.virtual_size = one("<Q", head, 0x170)
        if self.virtual_size is None:
            self.problem("header", "truncated vdi header")
