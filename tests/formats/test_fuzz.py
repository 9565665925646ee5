# Property-based tests (hypothesis): random bytes and mutated headers of every format never
# make the inspector raise, never make it retain more than its fixed bound, never yield two
# formats, and give the same verdict whatever the piece sizes.
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.engine.formats.inspector import RETAINED_MAX, FormatInspector

KiB = 1024
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check(data: bytes, cuts: list[int]):
    insp = FormatInspector()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in zip(points, points[1:]):
        insp.feed(memoryview(data)[a:b])
    verdict = insp.finish(len(data))
    assert insp.peak_retained <= RETAINED_MAX
    assert verdict.format is None or isinstance(verdict.format, str)
    if verdict.format is None:
        assert len(verdict.matches) >= 2 and not verdict.safe
    else:
        assert len(verdict.matches) <= 1
    assert verdict.safe == (not verdict.reasons)
    assert verdict.virtual_size is None or verdict.virtual_size >= 0
    whole = FormatInspector()
    whole.feed(data)
    assert whole.finish(len(data)) == verdict
    return verdict


@SETTINGS
@given(st.binary(max_size=4 * KiB), st.lists(st.integers(0, 1 << 20), max_size=8))
def test_random_bytes(data, cuts):
    check(data, cuts)


MAGICS = [b"QFI\xfb", b"QED\x00", b"KDMV", b"COWD", b"conectix", b"vhdxfile",
          b"LUKS\xba\xbe", b'createType="monolithicSparse"\nRW 1 SPARSE "a"\n']


@SETTINGS
@given(st.sampled_from(MAGICS), st.binary(max_size=2 * KiB),
       st.lists(st.integers(0, 1 << 20), max_size=8))
def test_random_bodies_behind_magic(magic, body, cuts):
    check(magic + body, cuts)


NAMES = ["qcow2", "qcow2-v2", "qed", "vmdk", "vmdk-stream", "vhd", "vhd-fixed", "vhdx", "vdi",
         "iso", "gpt", "mbr", "luks"]


@pytest.fixture(scope="module")
def seeds(mk):
    return {
        "qcow2": mk.qcow2(length=8 * KiB), "qcow2-v2": mk.qcow2(version=2, length=8 * KiB),
        "qed": mk.qed()[:8 * KiB], "vmdk": mk.vmdk(length=16 * KiB),
        "vmdk-stream": mk.vmdk(stream=True, length=16 * KiB), "vhd": mk.vhd_dynamic(),
        "vhd-fixed": mk.vhd_fixed(4 * KiB), "vhdx": mk.vhdx(), "vdi": mk.vdi(),
        "iso": mk.iso(20), "gpt": mk.gpt(8 * KiB), "mbr": mk.mbr(length=8 * KiB),
        "luks": mk.luks(payload_sectors=8, length=8 * KiB),
    }


def _hot(name: str, size: int) -> list[tuple[int, int]]:
    """Byte ranges holding the structures each format's probe reads."""
    spots = {"vhdx": [(0, 64), (192 * KiB, 192 * KiB + 256), (KiB * KiB, KiB * KiB + 256),
                      (KiB * KiB + 64 * KiB, KiB * KiB + 64 * KiB + 256)],
             "iso": [(0, 512), (32 * KiB, 32 * KiB + 4096)],
             "vmdk-stream": [(0, 1024), (size - 1536, size)],
             "vhd-fixed": [(size - 512, size)]}
    return spots.get(name, [(0, 1024)])


@SETTINGS
@given(st.data())
def test_mutated_headers(seeds, data):
    name = data.draw(st.sampled_from(NAMES))
    image = bytearray(seeds[name])
    spots = _hot(name, len(image))
    for _ in range(data.draw(st.integers(1, 12))):
        lo, hi = data.draw(st.sampled_from(spots))
        at = data.draw(st.integers(lo, min(hi, len(image)) - 1))
        image[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        image = image[:data.draw(st.integers(0, len(image)))]
    cuts = data.draw(st.lists(st.integers(0, len(image)), max_size=6))
    check(bytes(image), cuts)
