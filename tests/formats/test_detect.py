# Detection, virtual size and every refusal of each format probe, on images written byte by
# byte (tests/formats/conftest.py), in the spirit of os-test-images' safe and unsafe cases.
import struct

import pytest

from tessera.engine.formats.inspector import FormatInspector

KiB, MiB = 1024, 1024 * 1024


def inspect(data: bytes, piece: int = 64 * KiB):
    insp = FormatInspector()
    for i in range(0, len(data), piece):
        insp.feed(memoryview(data)[i:i + piece])
    return insp.finish(len(data))


def checks(verdict):
    return sorted({p.check for p in verdict.reasons})


SAFE = [
    ("raw", lambda mk: mk.raw(), "raw", 256 * KiB),
    ("empty", lambda mk: b"", "raw", 0),
    ("raw blank (zeros)", lambda mk: bytes(MiB), "raw", MiB),
    ("qcow2 v3", lambda mk: mk.qcow2(5 * MiB), "qcow2", 5 * MiB),
    ("qcow2 v2", lambda mk: mk.qcow2(7 * MiB, version=2), "qcow2", 7 * MiB),
    ("qcow2 dirty+compression+extended-l2 bits",
     lambda mk: mk.qcow2(MiB, incompatible=0b11011), "qcow2", MiB),
    ("qcow2 harmless extension",
     lambda mk: mk.qcow2(MiB, extensions=[(0x6803F857, bytes(48))]), "qcow2", MiB),
    ("vmdk monolithicSparse", lambda mk: mk.vmdk(4096), "vmdk", 4096 * 512),
    ("vmdk streamOptimized with footer", lambda mk: mk.vmdk(8192, stream=True), "vmdk",
     8192 * 512),
    ("vmdk monolithicSparse with footer", lambda mk: mk.vmdk(
        2048, gd_offset=0xFFFFFFFFFFFFFFFF) + mk.vmdk_footer(2048, flags=3), "vmdk",
     2048 * 512),
    ("vhd dynamic (qemu size)", lambda mk: mk.vhd_dynamic(10 * MiB), "vhd", 10 * MiB),
    ("vhd dynamic (CHS size)",
     lambda mk: mk.vhd_dynamic(10 * MiB, creator=b"vpc ", geometry=(20, 16, 63)), "vhd",
     20 * 16 * 63 * 512),
    ("vhd fixed", lambda mk: mk.vhd_fixed(64 * KiB), "vhd", 64 * KiB),
    ("vhd fixed holding an MBR disk", lambda mk: mk.vhd_fixed(body=mk.mbr()), "vhd",
     64 * KiB),
    ("vhdx", lambda mk: mk.vhdx(64 * MiB), "vhdx", 64 * MiB),
    ("vhdx metadata at 2 MiB", lambda mk: mk.vhdx(3 * MiB, metadata_at=2 * MiB), "vhdx",
     3 * MiB),
    ("vdi", lambda mk: mk.vdi(10 * MiB), "vdi", 10 * MiB),
    ("iso9660", lambda mk: mk.iso(40), "iso", 40 * 2048),
    ("udf", lambda mk: mk.iso(40, udf=True), "iso", None),
    ("hybrid iso (MBR in system area)", lambda mk: mk.iso(40, system_area=mk.mbr(
        length=512)), "iso", 40 * 2048),
    ("mbr", lambda mk: mk.mbr(), "gpt", 64 * KiB),
    ("gpt protective mbr", lambda mk: mk.gpt(), "gpt", 64 * KiB),
    ("fat boot sector is not a partition table", lambda mk: mk.mbr(fat=True), "raw",
     64 * KiB),
    ("luks v1", lambda mk: mk.luks(payload_sectors=4096), "luks", 64 * KiB),
]


@pytest.mark.parametrize("build,fmt,vsize", [c[1:] for c in SAFE], ids=[c[0] for c in SAFE])
def test_safe_images(mk, build, fmt, vsize):
    v = inspect(build(mk))
    assert (v.format, v.virtual_size, v.reasons) == (fmt, vsize, ())
    assert v.safe


def vmdk_desc(mk, **kw):
    return mk.vmdk(2048, descriptor=mk.vmdk_descriptor(**kw))


UNSAFE = [
    ("qcow2 backing file", lambda mk: mk.qcow2(backing=True), "qcow2", ["backing_file"]),
    ("qcow2 data-file bit", lambda mk: mk.qcow2(incompatible=0b100), "qcow2", ["data_file"]),
    ("qcow2 data-file extension", lambda mk: mk.qcow2(extensions=[(0x44415441, b"/dev/sda")]),
     "qcow2", ["data_file"]),
    ("qcow2 unknown feature", lambda mk: mk.qcow2(incompatible=1 << 9), "qcow2",
     ["unknown_features"]),
    ("qcow (v1)", lambda mk: mk.qcow2(version=1), "qcow2", ["version"]),
    ("qcow2 v4", lambda mk: mk.qcow2(version=4), "qcow2", ["version"]),
    ("qcow2 bad cluster bits", lambda mk: mk.qcow2(cluster_bits=40), "qcow2", ["header"]),
    ("qcow2 truncated", lambda mk: mk.qcow2()[:80], "qcow2", ["header"]),
    ("qed", lambda mk: mk.qed(), "qed", ["banned"]),
    ("vmdk monolithicFlat", lambda mk: vmdk_desc(mk, create_type="monolithicFlat",
                                                 extents=['RW 2048 FLAT "disk-flat.vmdk" 0']),
     "vmdk", ["create_type", "extents"]),
    ("vmdk flat leak (path extent)", lambda mk: vmdk_desc(mk, extents=[
        'RW 2048 SPARSE "/etc/passwd"']), "vmdk", ["extents"]),
    ("vmdk windows path extent", lambda mk: vmdk_desc(mk, extents=[
        'RW 2048 SPARSE "..\\\\secret.vmdk"']), "vmdk", ["extents"]),
    ("vmdk no extent", lambda mk: vmdk_desc(mk, extents=[]), "vmdk", ["extents"]),
    ("vmdk URL backing", lambda mk: vmdk_desc(mk, extra=[
        'parentFileNameHint="https://example.com/base.vmdk"']), "vmdk", ["backing_file"]),
    ("vmdk unknown line", lambda mk: vmdk_desc(mk, extra=["rm -rf /"]), "vmdk",
     ["descriptor"]),
    ("vmdk no createType", lambda mk: mk.vmdk(2048, descriptor=b'RW 2048 SPARSE "a.vmdk"\n'),
     "vmdk", ["create_type"]),
    ("vmdk descriptor not at sector 1", lambda mk: mk.vmdk(2048, desc_sector=7), "vmdk",
     ["descriptor"]),
    ("vmdk truncated descriptor", lambda mk: mk.vmdk(2048, desc_sectors=2048)[:4096], "vmdk",
     ["descriptor"]),
    ("vmdk descriptor file", lambda mk: mk.vmdk_descriptor(
        extents=['RW 2048 SPARSE "disk-s001.vmdk"']), "vmdk", ["extents"]),
    ("vmdk descriptor file flat", lambda mk: mk.vmdk_descriptor(
        "monolithicFlat", extents=['RW 2048 FLAT "/dev/sda" 0']), "vmdk",
     ["create_type", "extents"]),
    ("vmdk COWD", lambda mk: b"COWD" + bytes(4092), "vmdk", ["create_type"]),
    ("vmdk stream footer missing", lambda mk: mk.vmdk(2048, stream=True, footer=b""), "vmdk",
     ["footer"]),
    ("vmdk stream bad footer marker", lambda mk: mk.vmdk(2048, stream=True,
                                                         footer=mk.vmdk_footer(
                                                             2048, marker_type=1)),
     "vmdk", ["footer"]),
    ("vmdk stream bad eos", lambda mk: mk.vmdk(2048, stream=True, footer=mk.vmdk_footer(
        2048, eos=b"\x01" + bytes(511))), "vmdk", ["footer"]),
    ("vmdk stream footer disagrees", lambda mk: mk.vmdk(2048, stream=True,
                                                        footer=mk.vmdk_footer(99999)),
     "vmdk", ["footer"]),
    ("vmdk stream footer points to another footer", lambda mk: mk.vmdk(
        2048, stream=True, footer=mk.vmdk_footer(2048, gd_offset=0xFFFFFFFFFFFFFFFF)),
     "vmdk", ["footer"]),
    ("vhd differencing", lambda mk: mk.vhd_dynamic(disk_type=4), "vhd", ["parent"]),
    ("vhdx differencing", lambda mk: mk.vhdx(has_parent=True), "vhdx", ["parent"]),
    ("vhdx parent locator", lambda mk: mk.vhdx(parent_locator=True), "vhdx", ["parent"]),
    ("vhdx bad region table", lambda mk: mk.vhdx(region_sig=b"xxxx"), "vhdx", ["header"]),
    ("vhdx metadata in header area", lambda mk: mk.vhdx(metadata_at=512 * KiB), "vhdx",
     ["header"]),
    ("vhdx no size", lambda mk: mk.vhdx(with_size=False), "vhdx", ["header"]),
    ("vhdx truncated", lambda mk: mk.vhdx()[:300 * KiB], "vhdx", ["header"]),
    ("mbr bad boot flag", lambda mk: mk.mbr(((0x42, (1, 1, 0), 0x83, 2048, 10),)), "gpt",
     ["mbr"]),
    ("mbr no partition", lambda mk: mk.mbr(()), "gpt", ["mbr"]),
    ("protective mbr bad chs", lambda mk: mk.mbr(((0, (1, 1, 0), 0xEE, 1, 100),)), "gpt",
     ["mbr"]),
    ("protective mbr bad lba", lambda mk: mk.mbr(((0, (0, 2, 0), 0xEE, 5, 100),)), "gpt",
     ["mbr"]),
    ("protective mbr extra partition", lambda mk: mk.mbr((
        (0, (0, 2, 0), 0xEE, 1, 100), (0, (1, 1, 0), 0x83, 200, 100))), "gpt", ["mbr"]),
    ("luks v2", lambda mk: mk.luks(version=2), "luks", ["version"]),
]


@pytest.mark.parametrize("build,fmt,failed", [c[1:] for c in UNSAFE],
                         ids=[c[0] for c in UNSAFE])
def test_unsafe_images(mk, build, fmt, failed):
    v = inspect(build(mk))
    assert v.format == fmt
    assert not v.safe
    assert checks(v) == failed


AMBIGUOUS = [
    ("iso with qcow2 in system area", lambda mk: mk.iso(40, system_area=mk.qcow2(
        length=4096)), ("iso", "qcow2")),
    ("iso with vmdk in system area", lambda mk: mk.iso(40, system_area=mk.vmdk(
        2048, length=16 * KiB)), ("iso", "vmdk")),
    ("qcow2 with a vhd footer", lambda mk: mk.qcow2() + mk.vhd_footer(MiB, disk_type=2),
     ("qcow2", "vhd")),
    ("mbr disk in a fixed vhd", lambda mk: mk.mbr() + mk.vhd_footer(64 * KiB, disk_type=2),
     ("vhd",)),
    ("iso + mbr + vhd footer", lambda mk: mk.iso(40, system_area=mk.mbr(length=512))
     + mk.vhd_footer(MiB, disk_type=2), ("gpt", "iso", "vhd")),
]


@pytest.mark.parametrize("build,names", [c[1:] for c in AMBIGUOUS],
                         ids=[c[0] for c in AMBIGUOUS])
def test_several_formats(mk, build, names):
    v = inspect(build(mk))
    if len(names) == 1:   # the allowed pairings resolve to one format
        assert v.format == names[0] and v.safe
        return
    assert v.format is None and not v.safe
    assert v.matches == names
    assert checks(v) == ["formats"]


def test_qcow2_extension_walk_is_bounded(mk):
    many = [(0x12345678, b"x")] * 100
    v = inspect(mk.qcow2(extensions=many))
    assert v.format == "qcow2" and checks(v) == ["header"]


def test_vhd_fixed_geometry_size(mk):
    data = mk.vhd_fixed(body=mk.raw(128 * KiB), creator=b"vpc ", geometry=(4, 4, 16))
    assert inspect(data).virtual_size == 4 * 4 * 16 * 512


def test_vhd_max_geometry_uses_current_size(mk):
    data = mk.vhd_dynamic(3 * 1024 ** 4, creator=b"vpc ", geometry=(65535, 16, 255))
    assert inspect(data).virtual_size == 3 * 1024 ** 4


def test_iso_without_primary_descriptor_size_unknown(mk):
    data = bytearray(mk.iso(40))
    data[32 * KiB] = 2   # a supplementary descriptor first, no primary one
    v = inspect(bytes(data))
    assert v.format == "iso" and v.virtual_size is None


def test_luks_virtual_size_excludes_header(mk):
    data = mk.luks(payload_sectors=8, length=8 * 512 + 10000)
    assert inspect(data).virtual_size == 10000


def test_vmdk_text_that_is_no_descriptor_is_raw():
    text = b"just some text\n" * 100
    assert inspect(text).format == "raw"


def test_vmdk_header_capacity_from_little_endian(mk):
    data = bytearray(mk.vmdk(2048))
    data[12:20] = struct.pack("<Q", 123456)
    assert inspect(bytes(data)).virtual_size == 123456 * 512
