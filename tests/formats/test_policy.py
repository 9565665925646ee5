# Glance's upload rules on verdicts (engine/formats/policy.py): which declared disk_format
# accepts which detected format, Glance's exact 415 messages, the non-fatal MBR check for
# aki/ari, container_format=bare as the condition for the match rule, and virtual_size.
import pytest

from tessera.engine.errors import UnsupportedFormat
from tessera.engine.formats.gate import inspect_stream
from tessera.engine.formats.policy import decide
from tessera.engine.formats.verdict import Problem, Verdict

KiB, MiB = 1024, 1024 * 1024


def v(fmt, vsize=None, size=1000, reasons=()):
    return Verdict(fmt, vsize, size, tuple(reasons), (fmt,) if fmt else ("iso", "qcow2"))


@pytest.mark.parametrize("declared,detected", [
    ("raw", "raw"), ("raw", "gpt"), ("raw", "iso"), ("ami", "raw"), ("ami", "gpt"),
    ("aki", "raw"), ("ari", "raw"), ("ploop", "raw"), ("qcow2", "qcow2"), ("vmdk", "vmdk"),
    ("vhd", "vhd"), ("vhdx", "vhdx"), ("vdi", "vdi"), ("iso", "iso"),
])
def test_accepted_pairs(declared, detected):
    decide(v(detected, 5), declared, "bare")


@pytest.mark.parametrize("declared,detected", [
    ("raw", "qcow2"), ("raw", "vmdk"), ("raw", "vhd"), ("raw", "luks"), ("qcow2", "raw"),
    ("qcow2", "vmdk"), ("vmdk", "qcow2"), ("iso", "raw"), ("iso", "gpt"), ("vhd", "vhdx"),
    ("ami", "qcow2"), ("ploop", "gpt"), ("vdi", "raw"),
])
def test_mismatch_refused_with_glance_message(declared, detected):
    with pytest.raises(UnsupportedFormat) as info:
        decide(v(detected, 5), declared, "bare")
    assert info.value.message == \
        f"Image disk_format {declared} does not match stream data {detected}"


@pytest.mark.parametrize("container", ["ovf", "ova", "docker", "compressed", "ami"])
def test_mismatch_allowed_outside_bare(container):
    assert decide(v("raw", 1000), "qcow2", container) is None
    assert decide(v("qcow2", 5 * MiB), "raw", container) is None


@pytest.mark.parametrize("container", ["bare", "ovf"])
def test_unsafe_refused_in_every_container(container):
    bad = v("qcow2", MiB, reasons=[Problem("backing_file", "x")])
    with pytest.raises(UnsupportedFormat) as info:
        decide(bad, "qcow2", container)
    assert info.value.message == "Image failed safety checks"
    with pytest.raises(UnsupportedFormat):
        decide(v(None), "iso", container)


def test_mbr_check_nonfatal_only_for_aki_ari():
    odd = v("gpt", 1000, reasons=[Problem("mbr", "bad boot flag")])
    assert decide(odd, "aki", "bare") == 1000
    assert decide(odd, "ari", "bare") == 1000
    for declared in ("raw", "ami"):
        with pytest.raises(UnsupportedFormat):
            decide(odd, declared, "bare")


def test_virtual_size_rules():
    assert decide(v("qcow2", 5 * MiB, size=300), "qcow2", "bare") == 5 * MiB
    assert decide(v("raw", 300, size=300), "raw", "bare") == 300
    assert decide(v("gpt", 300, size=300), "raw", "bare") == 300
    assert decide(v("iso", 80 * KiB, size=100 * KiB), "raw", "bare") == 100 * KiB
    assert decide(v("iso", 80 * KiB, size=100 * KiB), "iso", "bare") == 80 * KiB
    assert decide(v("iso", None, size=100 * KiB), "iso", "bare") == 100 * KiB
    assert decide(v("raw", 300, size=300), "ami", "bare") == 300
    assert decide(v("vmdk", 4 * MiB, size=300), "vmdk", "ova") == 4 * MiB


async def test_gate_watches_a_stream(mk):
    data = mk.qcow2(3 * MiB)

    async def source():
        for i in range(0, len(data), 1000):
            yield memoryview(data)[i:i + 1000]

    gate = inspect_stream("qcow2", "bare")
    seen = bytearray()
    async for piece in gate.watch(source()):
        seen += piece
    assert bytes(seen) == data
    assert gate.finish(len(data)) == 3 * MiB
    assert gate.verdict.format == "qcow2"

    gate = inspect_stream("raw", "bare")
    async for _ in gate.watch(source()):
        pass
    with pytest.raises(UnsupportedFormat) as info:
        gate.finish(len(data))
    assert info.value.message == "Image disk_format raw does not match stream data qcow2"
