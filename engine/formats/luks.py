# LUKS: owns the big-endian header at offset 0 (magic "LUKS\xba\xbe", version 6,
# payload_offset 104 in 512-byte sectors). Only LUKS version 1 is accepted; the virtual
# size is what follows the payload offset.
from __future__ import annotations

from tessera.engine.formats.probe import Probe, Want, one

MAGIC = b"LUKS\xba\xbe"


class LuksProbe(Probe):
    name = "luks"

    def __init__(self) -> None:
        super().__init__()
        self._payload: int | None = None

    def on_head(self, head: bytes, want: Want) -> None:
        if head[:6] != MAGIC:
            return
        self.matched = True
        version = one(">H", head, 6)
        self._payload = one(">I", head, 104)
        if version != 1:
            self.problem("version", f"LUKS version {version} is not supported")
        if self._payload is None:
            self.problem("header", "truncated LUKS header")

    def on_end(self, total: int, tail: bytes) -> None:
        if self.matched and self._payload is not None:
            self.virtual_size = max(0, total - self._payload * 512)
