# Disk-image fixtures written byte by byte (no qemu-img needed), in the spirit of the
# os-test-images set: each builder returns the bytes of one small image. Exposed to tests as
# the session fixture `mk` (a namespace of builders) so hypothesis tests can use it too.
# Invariants: deterministic output; images stay small (a few hundred KiB at most, except the
# vhdx builder, whose metadata lives at 1 MiB or beyond as the format requires).
from __future__ import annotations

import struct
import uuid
from types import SimpleNamespace

import pytest

KiB, MiB = 1024, 1024 * 1024


def pad(data: bytes, size: int) -> bytes:
    assert len(data) <= size
    return data + bytes(size - len(data))


def filler(n: int, seed: int = 7) -> bytes:
    """Non-zero bytes that match no signature (no 0x55aa pair, no magic)."""
    out = bytearray()
    x = seed
    while len(out) < n:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(0x20 + (x >> 16) % 0x50)   # bytes 0x20..0x6f, never 0x55 0xaa
    out[0:4] = b"\x00\x01\x02\x03"             # not text, so no vmdk descriptor file
    return bytes(out)


def raw(n: int = 256 * KiB) -> bytes:
    return filler(n)


def qcow2(size: int = 1 * MiB, *, version: int = 3, cluster_bits: int = 16,
          backing: bool = False, incompatible: int = 0, extensions=(),
          header_length: int = 104, length: int = 3 * 64 * KiB) -> bytes:
    head = struct.pack(">4sIQIIQIIQQIIQ", b"QFI\xfb", version, 0, 0, cluster_bits, size,
                       0, 1, 3 * 65536, 65536, 1, 0, 0)
    if backing:
        head = head[:8] + struct.pack(">QI", 1024, 9) + head[20:]
    if version >= 3:
        head += struct.pack(">QQQII", incompatible, 0, 0, 4, header_length)
        head = pad(head, header_length)
    for kind, data in extensions:
        head += struct.pack(">II", kind, len(data)) + pad(data, (len(data) + 7) // 8 * 8)
    head += struct.pack(">II", 0, 0)
    if backing:
        head = pad(head, 1024) + b"/etc/shadow"
    return pad(head, length)


def qed(size: int = 1 * MiB) -> bytes:
    head = struct.pack("<4sIIIQQQQQII", b"QED\x00", 65536, 4, 1, 0, 0, 0, 65536, size, 0, 0)
    return pad(head, 3 * 64 * KiB)


VMDK_HEADER = "<4sIIQQQQIQQQB4sH"


def vmdk_descriptor(create_type: str = "monolithicSparse", *, sectors: int = 2048,
                    extents=None, extra=()) -> bytes:
    if extents is None:
        extents = [f'RW {sectors} SPARSE "disk.vmdk"']
    lines = ["# Disk DescriptorFile", "version=1", "CID=12345678", "parentCID=ffffffff",
             f'createType="{create_type}"', "", "# Extent description", *extents, "",
             "# The Disk Data Base", "#DDB", "", 'ddb.virtualHWVersion = "4"',
             'ddb.geometry.cylinders = "2"', 'ddb.adapterType = "ide"', *extra]
    return ("\n".join(lines) + "\n").encode()


def vmdk_header(capacity: int, *, gd_offset: int = 21, desc_sector: int = 1,
                desc_sectors: int = 20, version: int = 1, flags: int = 3) -> bytes:
    return pad(struct.pack(VMDK_HEADER, b"KDMV", version, flags, capacity, 128, desc_sector,
                           desc_sectors, 512, 0, gd_offset, 128, 0, b"\n \r\n", 0), 512)


def vmdk(capacity: int = 2048, *, create_type: str = "monolithicSparse", descriptor=None,
         stream: bool = False, footer=None, length: int = 64 * KiB, **header) -> bytes:
    """A hosted sparse extent. stream=True: streamOptimized with its header's grain
    directory at the end and a footer (override with footer=bytes)."""
    if stream:
        create_type = "streamOptimized"
        header.setdefault("gd_offset", 0xFFFFFFFFFFFFFFFF)
        header.setdefault("flags", 0x30001)
    desc = descriptor if descriptor is not None else vmdk_descriptor(create_type,
                                                                    sectors=capacity)
    body = pad(vmdk_header(capacity, **header) + pad(desc, 20 * 512), length)
    if stream:
        if footer is None:
            footer = vmdk_footer(capacity, **{k: v for k, v in header.items()
                                              if k != "gd_offset"})
        body += footer
    return body


def vmdk_footer(capacity: int, *, marker_type: int = 3, eos: bytes = bytes(512),
                gd_offset: int = 40, **header) -> bytes:
    header.setdefault("flags", 0x30001)
    marker = struct.pack("<QII", 1, 0, marker_type) + bytes(496)
    return marker + vmdk_header(capacity, gd_offset=gd_offset, **header) + eos


def vhd_footer(size: int, *, disk_type: int = 3, creator: bytes = b"qem2",
               geometry=(1024, 16, 63), data_offset: int = 512) -> bytes:
    cyl, heads, secs = geometry
    footer = struct.pack(">8sIIQI4sI4sQQHBBII16sB", b"conectix", 2, 0x10000, data_offset, 0,
                         creator, 0x50003, b"Wi2k", size, size, cyl, heads, secs, disk_type,
                         0, uuid.UUID(int=1).bytes, 0)
    checksum = (~sum(footer)) & 0xFFFFFFFF
    return pad(footer[:64] + struct.pack(">I", checksum) + footer[68:], 512)


def vhd_dynamic(size: int = 10 * MiB, **footer) -> bytes:
    """Footer copy, dynamic header, an empty block table (2 MiB blocks), footer."""
    copy = vhd_footer(size, **footer)
    entries = max(1, -(-size // (2 * MiB)))
    dyn = bytearray(pad(struct.pack(">8sQQIII", b"cxsparse", 0xFFFFFFFFFFFFFFFF, 1536,
                                    0x00010000, entries, 2 * MiB), 1024))
    dyn[36:40] = struct.pack(">I", (~sum(dyn)) & 0xFFFFFFFF)
    bat = b"\xff" * (-(-entries * 4 // 512) * 512)
    return copy + bytes(dyn) + bat + copy


def vhd_fixed(size: int = 64 * KiB, *, body: bytes | None = None, **footer) -> bytes:
    footer.setdefault("disk_type", 2)
    footer.setdefault("data_offset", 0xFFFFFFFFFFFFFFFF)
    data = body if body is not None else filler(size)
    return data + vhd_footer(len(data), **footer)


GUID = {name: uuid.UUID(text).bytes_le for name, text in {
    "metadata": "8B7CA206-4790-4B9A-B8FE-575F050F886E",
    "bat": "2DC27766-F623-4200-9D64-115E9BFD4A08",
    "size": "2FA54224-CD1B-4876-B211-5DBED83BF4B8",
    "params": "CAA16737-FA36-4D43-B3B6-33F0AA44E76B",
    "sector": "8141BF1D-A96F-4709-BA47-F233A8FAAB5F",
    "parent": "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C",
}.items()}


def vhdx(size: int = 64 * MiB, *, metadata_at: int = 1 * MiB, has_parent: bool = False,
         parent_locator: bool = False, region_sig: bytes = b"regi",
         with_size: bool = True) -> bytes:
    out = bytearray(metadata_at + 128 * KiB)
    out[0:8] = b"vhdxfile"
    table = struct.pack("<4sIII", region_sig, 0, 2, 0)
    table += struct.pack("<16sQII", GUID["bat"], metadata_at + 64 * KiB, 64 * KiB, 1)
    table += struct.pack("<16sQII", GUID["metadata"], metadata_at, 64 * KiB, 1)
    for at in (192 * KiB, 256 * KiB):
        out[at:at + len(table)] = table
    items = [("params", struct.pack("<II", 32 * MiB, 2 if has_parent else 0)),
             ("sector", struct.pack("<I", 512))]
    if with_size:
        items.insert(0, ("size", struct.pack("<Q", size)))
    if parent_locator:
        items.append(("parent", bytes(24)))
    meta = bytearray(struct.pack("<8sHH", b"metadata", 0, len(items)) + bytes(20))
    data_at = 64 * KiB
    for i, (name, value) in enumerate(items):
        meta += struct.pack("<16sIIII", GUID[name], data_at + 64 * i, len(value), 4, 0)
        out[metadata_at + data_at + 64 * i:metadata_at + data_at + 64 * i + len(value)] = value
    out[metadata_at:metadata_at + len(meta)] = meta
    return bytes(out)


def vdi(size: int = 10 * MiB) -> bytes:
    """A dynamic VDI 1.1 with 1 MiB blocks, none allocated."""
    blocks = max(1, -(-size // MiB))
    head = pad(b"<<< Oracle VM VirtualBox Disk Image >>>\n", 64)
    head += struct.pack("<IIIII", 0xBEDA107F, 0x00010001, 0x180, 1, 0)
    bmap_at = 0x200
    data_at = bmap_at + -(-blocks * 4 // 512) * 512
    head = pad(head, 0x154) + struct.pack("<IIIIIIIQIIII", bmap_at, data_at, 0, 0, 0, 512, 0,
                                          size, MiB, 0, blocks, 0)
    head += uuid.UUID(int=7).bytes + bytes(48)
    return pad(head, bmap_at) + pad(b"\xff" * (blocks * 4), data_at - bmap_at)


def iso(blocks: int = 40, *, system_area: bytes = b"", udf: bool = False) -> bytes:
    out = bytearray(pad(system_area, 32 * KiB))
    if udf:
        for ident in (b"BEA01", b"NSR02", b"TEA01"):
            out += pad(b"\x00" + ident + b"\x01", 2048)
    else:
        pvd = bytearray(pad(b"\x01CD001\x01", 2048))
        pvd[80:88] = struct.pack("<I", blocks) + struct.pack(">I", blocks)
        pvd[128:132] = struct.pack("<H", 2048) + struct.pack(">H", 2048)
        out += pvd + pad(b"\xffCD001\x01", 2048)
    return pad(bytes(out), max(len(out), blocks * 2048))


def mbr(partitions=((0x80, (1, 1, 0), 0x83, 2048, 4096),), *, length: int = 64 * KiB,
        fat: bool = False) -> bytes:
    sector = bytearray(512)
    for i, (boot, chs, kind, lba, count) in enumerate(partitions):
        sector[446 + 16 * i:462 + 16 * i] = struct.pack("<BBBBBBBBII", boot, *chs, kind,
                                                        0xFE, 0xFF, 0xFF, lba, count)
    sector[510:512] = b"\x55\xaa"
    if fat:
        sector[0x10], sector[0x15] = 2, 0xF8
    return pad(bytes(sector), length)


def gpt(length: int = 64 * KiB, **kw) -> bytes:
    body = bytearray(mbr(((0x00, (0, 2, 0), 0xEE, 1, 0xFFFFFFFF),), length=length, **kw))
    body[512:520] = b"EFI PART"
    return bytes(body)


def luks(version: int = 1, payload_sectors: int = 4096, length: int = 4096 * 512 + 64 * KiB):
    head = struct.pack(">6sH32s32s32sI", b"LUKS\xba\xbe", version, b"aes", b"xts-plain64",
                       b"sha256", payload_sectors)
    return pad(head, length)


BUILDERS = SimpleNamespace(**{name: fn for name, fn in dict(globals()).items()
                              if callable(fn) and not name.startswith("_")
                              and getattr(fn, "__module__", None) == __name__})
BUILDERS.KiB, BUILDERS.MiB = KiB, MiB


@pytest.fixture(scope="session")
def mk():
    return BUILDERS
