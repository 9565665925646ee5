# Streaming properties of FormatInspector: the verdict does not depend on how the stream is
# cut into pieces (down to single bytes), retained memory stays under the fixed bound for
# any stream length, regions that start far ahead or already went by are handled, and the
# sans-IO contract (feed after finish, wrong total) is enforced.
import random

import pytest

from tessera.engine.formats.inspector import RETAINED_MAX, FormatInspector

KiB, MiB = 1024, 1024 * 1024


def corpus(mk):
    return {
        "raw": mk.raw(100 * KiB), "qcow2": mk.qcow2(), "qcow2-backing": mk.qcow2(backing=True),
        "qed": mk.qed(), "vmdk": mk.vmdk(), "vmdk-stream": mk.vmdk(4096, stream=True),
        "vmdk-file": mk.vmdk_descriptor(), "vhd": mk.vhd_dynamic(), "vhd-fixed":
        mk.vhd_fixed(), "vhdx": mk.vhdx(), "vdi": mk.vdi(), "iso": mk.iso(40),
        "iso-hybrid": mk.iso(40, system_area=mk.mbr(length=512)),
        "iso-qcow2": mk.iso(40, system_area=mk.qcow2(length=4096)), "gpt": mk.gpt(),
        "luks": mk.luks(), "short": b"QFI", "empty": b"",
    }


def run(data, sizes):
    insp = FormatInspector()
    i = 0
    for n in sizes:
        if i >= len(data):
            break
        insp.feed(data[i:i + n])
        i += n
    if i < len(data):
        insp.feed(data[i:])
    verdict = insp.finish(len(data))
    assert insp.peak_retained <= RETAINED_MAX
    return verdict


def random_sizes(rnd, small):
    while True:
        yield rnd.choice((1, 7, 511, 512, 513, 4096)) if small else rnd.randint(1, 300 * KiB)


@pytest.mark.parametrize("seed", range(3))
def test_any_split_gives_the_same_verdict(mk, seed):
    rnd = random.Random(seed)
    for name, data in corpus(mk).items():
        whole = run(data, [len(data) or 1])
        assert run(data, random_sizes(rnd, False)) == whole, name
        if len(data) <= 300 * KiB:
            assert run(data, random_sizes(rnd, True)) == whole, name


def test_bytearray_and_memoryview_pieces(mk):
    data = mk.vhdx()
    a, b = FormatInspector(), FormatInspector()
    a.feed(bytearray(data))
    b.feed(memoryview(data).cast("B", (len(data),)))
    assert a.finish() == b.finish() and a.finish().format == "vhdx"


def test_memory_bounded_on_a_long_stream(mk):
    insp = FormatInspector()
    insp.feed(mk.vmdk(1 << 22, stream=True, footer=b""))
    zeros = bytes(MiB)
    for _ in range(64):
        insp.feed(zeros)
        assert insp.retained_bytes() <= RETAINED_MAX
    v = insp.finish()
    assert v.format == "vmdk" and v.failed("footer")
    assert insp.peak_retained <= RETAINED_MAX


def test_region_far_ahead_is_missed_at_the_end(mk):
    data = bytearray(mk.vhdx())
    table = 192 * KiB
    # point the metadata region 1 TiB away: the stream ends long before it
    data[table + 16 + 32 + 16:table + 16 + 32 + 24] = (1 << 40).to_bytes(8, "little")
    v = run(bytes(data), [MiB])
    assert v.format == "vhdx" and v.failed("header")


def test_region_already_passed_is_refused(mk):
    # the region table (at 192 KiB) points at metadata at 300 KiB, which the stream has
    # already passed when the table is read in small pieces (and is a spec violation anyway)
    data = mk.vhdx(metadata_at=300 * KiB)
    for sizes in ([len(data)], [4096] * (len(data) // 4096 + 1)):
        v = run(data, sizes)
        assert v.format == "vhdx" and v.failed("header")


def test_feed_after_finish_and_wrong_total():
    insp = FormatInspector()
    insp.feed(b"abc")
    with pytest.raises(ValueError):
        insp.finish(4)
    assert insp.finish(3).format == "raw"
    with pytest.raises(RuntimeError):
        insp.feed(b"d")
    assert insp.retained_bytes() == 0


def test_region_behind_its_trigger_is_missed_for_every_split(mk):
    # the Virtual Disk Size item points back into the metadata table (offset 0): with one
    # big piece those bytes are still at hand, with small pieces they went by; the verdict
    # must not depend on that
    data = bytearray(mk.vhdx())
    entry = MiB + 32   # first metadata entry (the size item): its offset field at +16
    data[entry + 16:entry + 20] = (0).to_bytes(4, "little")
    whole = run(bytes(data), [len(data)])
    assert whole.format == "vhdx" and whole.failed("header")
    for size in (512, 4096, 100 * KiB):
        assert run(bytes(data), [size] * (len(data) // size + 1)) == whole
