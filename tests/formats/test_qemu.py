# Cross-checks against qemu-img (skipped only when qemu-img is absent): images qemu-img
# makes are detected as their format with the virtual size `qemu-img info -f FMT` reports,
# and the unsafe ones it can make (backing file, external data file, flat and split vmdk
# descriptors, qed) are refused. qemu-img only ever reads bytes tessera generated here.
import json
import shutil
import subprocess

import pytest

from tessera.engine.formats.inspector import FormatInspector

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img is not installed")
MiB = 1024 * 1024


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def qemu_size(path, fmt):
    return json.loads(qemu_img("info", "-f", fmt, "--output=json", str(path)))["virtual-size"]


def inspect_file(path, piece=1 << 20):
    insp = FormatInspector()
    with open(path, "rb") as f:
        while block := f.read(piece):
            insp.feed(block)
    return insp.finish(path.stat().st_size)


SAFE = [
    ("qcow2", "qcow2", [], "10M"),
    ("qcow2", "qcow2", ["-o", "compat=0.10"], "7M"),
    ("qcow2", "qcow2", ["-o", "cluster_size=2M"], "1G"),
    ("qcow2", "qcow2", ["-o", "extended_l2=on"], "10M"),
    ("qcow2", "qcow2", ["-o", "compression_type=zstd"], "3G"),
    ("vmdk", "vmdk", [], "10M"),
    ("vmdk", "vmdk", ["-o", "subformat=streamOptimized"], "20M"),
    ("vhdx", "vhdx", [], "64M"),
    ("vhdx", "vhdx", [], "5G"),
    ("vpc", "vhd", [], "10M"),
    ("vpc", "vhd", ["-o", "force_size=on"], "100M"),
    ("vpc", "vhd", ["-o", "subformat=fixed"], "3M"),
    ("vdi", "vdi", [], "10M"),
    ("raw", "raw", [], "2M"),
]


@pytest.mark.parametrize("fmt,name,opts,size", SAFE,
                         ids=[f"{s[0]}{''.join(s[2])}-{s[3]}" for s in SAFE])
def test_qemu_made_images(tmp_path, fmt, name, opts, size):
    path = tmp_path / f"img.{fmt}"
    qemu_img("create", "-q", "-f", fmt, *opts, str(path), size)
    v = inspect_file(path)
    assert (v.format, v.reasons) == (name, ())
    assert v.virtual_size == qemu_size(path, fmt)


def test_qemu_converted_stream_optimized_with_data(tmp_path):
    src = tmp_path / "src.raw"
    src.write_bytes(bytes(range(256)) * 4096 + bytes(MiB) + b"tessera" * 10000)
    out = tmp_path / "s.vmdk"
    qemu_img("convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
             str(src), str(out))
    v = inspect_file(out, piece=4096)
    assert (v.format, v.reasons) == ("vmdk", ())
    assert v.virtual_size == qemu_size(out, "vmdk")


def test_qemu_luks(tmp_path):
    path = tmp_path / "img.luks"
    qemu_img("create", "-q", "-f", "luks", "--object", "secret,id=s0,data=pw", "-o",
             "key-secret=s0,iter-time=10", str(path), "4M")
    v = inspect_file(path)
    assert (v.format, v.reasons, v.virtual_size) == ("luks", (), qemu_size(path, "luks"))


def test_qemu_unsafe_images(tmp_path):
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "4M")
    made = {
        "backing": (["-f", "qcow2", "-b", str(base), "-F", "qcow2"], None, "qcow2"),
        "data_file": (["-f", "qcow2", "-o", f"data_file={tmp_path / 'd.raw'}"], "4M", "qcow2"),
        "flat": (["-f", "vmdk", "-o", "subformat=monolithicFlat"], "1M", "vmdk"),
        "split": (["-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"], "1M", "vmdk"),
        "qed": (["-f", "qed"], "4M", "qed"),
    }
    expected = {"backing": {"backing_file"}, "data_file": {"data_file"},
                "flat": {"create_type", "extents"}, "split": {"create_type", "extents"},
                "qed": {"banned"}}
    for key, (args, size, fmt) in made.items():
        path = tmp_path / f"{key}.img"
        qemu_img("create", "-q", *args, str(path), *([size] if size else []))
        v = inspect_file(path)
        assert v.format == fmt, key
        assert {p.check for p in v.reasons} == expected[key], key


def test_qemu_agrees_on_hand_built_fixtures(tmp_path, mk):
    """Our byte-by-byte fixtures are images qemu-img reads with the same virtual size."""
    for name, data, fmt in [("v.vdi", mk.vdi(10 * MiB), "vdi"),
                            ("d.vhd", mk.vhd_dynamic(10 * MiB), "vpc"),
                            ("f.vhd", mk.vhd_fixed(64 * 1024), "vpc"),
                            ("c.vhd", mk.vhd_dynamic(10 * MiB, creator=b"vpc ",
                                                     geometry=(20, 16, 63)), "vpc")]:
        path = tmp_path / name
        path.write_bytes(data)
        v = inspect_file(path)
        assert v.virtual_size == qemu_size(path, fmt), name
