# qcow2 (versions 2 and 3): owns the header at offset 0 and the header extensions that
# follow it (all inside the head). Refuses a backing file, an external data file (the
# incompatible-feature bit or the data-file-name extension), unknown incompatible features
# and versions other than 2/3 (version 1 is the old qcow format under the same magic).
# Big-endian layout: magic 0, version 4, backing_file_offset 8, backing_file_size 16,
# cluster_bits 20, size 24, ...; v3 adds incompatible_features 72, compatible 80,
# autoclear 88, refcount_order 96, header_length 100.
from __future__ import annotations

from tessera.engine.formats.probe import Probe, Want, one, unpack

MAGIC = b"QFI\xfb"
V2_HEADER = 72
DATA_FILE_BIT = 1 << 2
KNOWN_INCOMPATIBLE = 0b11111     # dirty, corrupt, data file, compression type, extended L2
EXT_END = 0x00000000
EXT_DATA_FILE = 0x44415441       # external data file name
EXTENSIONS_MAX = 64


class Qcow2Probe(Probe):
    name = "qcow2"

    def on_head(self, head: bytes, want: Want) -> None:
        fields = unpack(">4sIQIIQ", head)
        if fields is None or fields[0] != MAGIC:
            return
        self.matched = True
        _, version, backing_offset, _backing_len, cluster_bits, size = fields
        self.virtual_size = size
        if version not in (2, 3):
            self.problem("version", f"unsupported qcow2 version {version}")
            return
        if backing_offset != 0:
            self.problem("backing_file", "image names a backing file")
        if not 9 <= cluster_bits <= 21:
            self.problem("header", f"invalid cluster_bits {cluster_bits}")
            return
        header_length = V2_HEADER
        if version == 3:
            incompatible = one(">Q", head, 72)
            header_length = one(">I", head, 100)
            if incompatible is None or header_length is None:
                self.problem("header", "truncated qcow2 v3 header")
                return
            if incompatible & DATA_FILE_BIT:
                self.problem("data_file", "image uses an external data file")
            if incompatible & ~KNOWN_INCOMPATIBLE:
                self.problem("unknown_features",
                             f"unknown incompatible features {incompatible:#x}")
            if header_length < 104 or header_length % 8:
                self.problem("header", f"invalid header length {header_length}")
                return
        self._extensions(head, header_length, 1 << cluster_bits)

    def _extensions(self, head: bytes, offset: int, cluster: int) -> None:
        limit = min(cluster, len(head))
        for _ in range(EXTENSIONS_MAX):
            got = unpack(">II", head, offset)
            if got is None or offset + 8 > limit:
                self.problem("header", "header extensions run past the inspected header")
                return
            kind, length = got
            if kind == EXT_END:
                return
            if kind == EXT_DATA_FILE:
                self.problem("data_file", "header names an external data file")
            offset += 8 + (length + 7) // 8 * 8
        self.problem("header", "too many header extensions")
