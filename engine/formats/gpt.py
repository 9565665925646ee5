# GPT and legacy MBR partitioned disks: owns the first sector (boot signature 0x55aa at 510,
# partition entries at 446). A FAT boot sector carries the same signature and is not a
# partition table (two FATs on a fixed-disk medium). The "mbr" check requires valid boot
# flags, at least one partition, and a protective MBR that is the only partition, starting
# at CHS 0/2/0 and LBA 1. The virtual size is the stream size (the bytes are the disk).
from __future__ import annotations

from tessera.engine.formats.probe import Probe, Want, one, unpack

SIGNATURE = 0xAA55
TABLE = 446
PROTECTIVE = 0xEE
FIXED_DISK_MEDIA = 0xF8


class GptProbe(Probe):
    name = "gpt"

    def on_head(self, head: bytes, want: Want) -> None:
        if len(head) < 512 or one("<H", head, 510) != SIGNATURE:
            return
        if head[0x10] == 2 and head[0x15] == FIXED_DISK_MEDIA:
            return  # a FAT volume boot record, not a partition table
        self.matched = True
        used, protective = [], False
        for i in range(4):
            boot, chs_h, chs_s, chs_c, kind, _, _, _, lba, _ = unpack(
                "<BBBBBBBBII", head, TABLE + 16 * i)
            if boot not in (0x00, 0x80):
                self.problem("mbr", f"MBR partition {i} has an invalid boot flag")
                return
            if kind != 0:
                used.append(i)
            if kind == PROTECTIVE:
                protective = True
                if (chs_h, chs_s, chs_c) != (0, 2, 0):
                    self.problem("mbr", "protective MBR has an invalid start CHS")
                if lba != 1:
                    self.problem("mbr", "protective MBR has an invalid start LBA")
        if protective and used != [0]:
            self.problem("mbr", "protective MBR defines other partitions")
        if not used:
            self.problem("mbr", "MBR defines no partition")

    def on_end(self, total: int, tail: bytes) -> None:
        if self.matched:
            self.virtual_size = total
