# VMDK: owns the hosted sparse extent header at offset 0 ("KDMV"), its embedded descriptor
# (at sector 1, at most 1 MiB), the streamOptimized footer (the last 1536 bytes: footer
# marker, footer header, end-of-stream marker), the old "COWD" sparse header and plain-text
# descriptor files. Accepts only monolithicSparse and streamOptimized images whose
# descriptor is made of comments, ddb lines, key=value fields and SPARSE extent lines whose
# file names hold no path; refuses a parentFileNameHint (a backing file), any descriptor
# file (its extents are always other files) and a footer that disagrees with the header.
# Little-endian header: magic 0, version 4, flags 8, capacity 12 (sectors), grain 20,
# descriptor offset 28, descriptor size 36 (sectors), ..., gd_offset 56.
from __future__ import annotations

import re

from tessera.engine.formats.probe import REGION_MAX, Probe, Want, unpack

MAGIC = b"KDMV"
COWD = b"COWD"
HEADER = "<4sIIQQQQIQQ"
GD_AT_END = 0xFFFFFFFFFFFFFFFF
ALLOWED_TYPES = ("monolithicsparse", "streamoptimized")
MARKER_FOOTER, MARKER_EOS = 3, 0
TEXT_PROBE = 512
EXTENT = re.compile(r'(rw|rdonly|noaccess)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?')
FIELD = re.compile(r"[A-Za-z0-9_.]+\s*=")


def _is_text(data: bytes) -> bool:
    return bool(data) and all(32 <= b < 127 or b in (9, 10, 13) for b in data)


class VmdkProbe(Probe):
    name = "vmdk"

    def __init__(self) -> None:
        super().__init__()
        self._header: tuple | None = None
        self._footer_expected = False

    def on_head(self, head: bytes, want: Want) -> None:
        if head[:4] == COWD:
            self.matched = True
            self.problem("create_type", "vmdk COWD (ESX sparse) extents are not allowed")
        elif head[:4] == MAGIC:
            self._sparse(head, want)
        elif _is_text(head[:TEXT_PROBE]):
            text = _text(head)
            if text is not None and _create_type(text) is not None:
                self.matched = True
                self.problem("extents", "vmdk descriptor file names extents outside the image")
                self._descriptor(text)

    def _sparse(self, head: bytes, want: Want) -> None:
        self.matched = True
        header = unpack(HEADER, head)
        if header is None:
            self.problem("header", "truncated vmdk header")
            return
        self._header = header
        _, version, _flags, capacity, _grain, desc_sector, desc_sectors, _, _, gd_offset = header
        self.virtual_size = capacity * 512
        self._footer_expected = gd_offset == GD_AT_END
        if version not in (1, 2, 3):
            self.problem("header", f"unsupported vmdk version {version}")
        if desc_sector != 1 or desc_sectors == 0:
            self.problem("descriptor", "vmdk has no embedded descriptor at sector 1")
            return
        want("descriptor", 512, min(desc_sectors * 512, REGION_MAX))

    def on_region(self, key: str, data: bytes | None, want: Want) -> None:
        text = None if data is None else _text(data)
        if text is None:
            self.problem("descriptor", "vmdk descriptor missing or not text")
        else:
            self._descriptor(text)

    def _descriptor(self, text: str) -> None:
        kind = _create_type(text)
        if kind is None or kind.lower() not in ALLOWED_TYPES:
            self.problem("create_type", f"vmdk create type {kind!r} is not allowed")
        extents = 0
        for raw in text.split("\n"):
            line = raw.strip()
            low = line.lower()
            if not line or line.startswith("#") or low.startswith("ddb."):
                continue
            if low.startswith("parentfilenamehint"):
                self.problem("backing_file", "vmdk names a parent file")
            elif FIELD.match(line):
                continue
            elif (m := EXTENT.fullmatch(low)) is not None:
                extents += 1
                if m.group(3) != "sparse":
                    self.problem("extents", f"vmdk extent type {m.group(3)} is not allowed")
                name = m.group(4) or ""
                if "/" in name or "\\" in name:
                    self.problem("extents", "vmdk extent names a path")
            else:
                self.problem("descriptor", "vmdk descriptor holds an unknown line")
        if not extents:
            self.problem("extents", "vmdk descriptor names no extent")

    def on_end(self, total: int, tail: bytes) -> None:
        if self._header is None or not self._footer_expected:
            return
        if total < 1536 + 512 or len(tail) < 1536:
            self.problem("footer", "vmdk stream ends before its footer")
            return
        marker = unpack("<QII496s", tail, 0)
        footer = unpack(HEADER, tail, 512)
        eos = tail[1024:1536]
        if marker is None or marker[1:] != (0, MARKER_FOOTER, bytes(496)):
            self.problem("footer", "vmdk footer marker is invalid")
        if eos != bytes(512):
            self.problem("footer", "vmdk end-of-stream marker is invalid")
        head = self._header
        if footer is None or footer[0] != MAGIC:
            self.problem("footer", "vmdk footer header is invalid")
            return
        if footer[1] != head[1] or footer[3] != head[3] or footer[5:7] != head[5:7]:
            self.problem("footer", "vmdk footer disagrees with the header")
        if footer[9] == GD_AT_END:
            self.problem("footer", "vmdk footer points to another footer")


def _text(data: bytes) -> str | None:
    """The descriptor text: up to the first NUL, ASCII only."""
    end = data.find(b"\x00")
    body = data if end < 0 else data[:end]
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        return None


def _create_type(text: str) -> str | None:
    m = re.search(r'(?im)^\s*createtype\s*=\s*"([^"\n]{0,64})"', text)
    return None if m is None else m.group(1)
