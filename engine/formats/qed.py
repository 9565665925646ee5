# QED: owns the signature at offset 0. The format is recognised only to be refused (Glance
# bans it; nothing here uses it and it can name a backing file).
# Little-endian layout: magic 0 ("QED\0"), ..., image_size 48.
from __future__ import annotations

from tessera.engine.formats.probe import Probe, Want, one

MAGIC = b"QED\x00"


class QedProbe(Probe):
    name = "qed"

    def on_head(self, head: bytes, want: Want) -> None:
        if head[:4] != MAGIC:
            return
        self.matched = True
        self.virtual_size = one("<Q", head, 48)
        self.problem("banned", "the qed format is not allowed")
