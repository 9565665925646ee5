# The chunker: zero extents and FastCDC cuts do not depend on how the stream was split.
import os
import random

from tessera.engine.chunker import (CHUNKER_ID, DATA, MAX_CARRY, MAX_SIZE, MIN_SIZE, ZERO,
                                    ZERO_MIN_RUN, Chunker, cut_all)


def stream_cut(data: bytes, rng: random.Random, cap: int) -> list:
    """Cut `data` the way the ingest pipeline does: fixed buffers, carried tails."""
    head = MAX_CARRY + 8192
    chunker, out, buf = Chunker(), [], bytearray(head + cap)
    carry, base, i = b"", 0, 0
    while True:
        n = 0
        while n < cap and i < len(data):
            k = min(cap - n, rng.choice([1, 999, 65536, 1 << 20]), len(data) - i)
            buf[head + n:head + n + k] = data[i:i + k]
            n, i = n + k, i + k
        final = i >= len(data)
        lo = head - len(carry)
        buf[lo:head] = carry
        cut = chunker.cut(buf, lo, head + n, base, final)
        for kind, start, length in cut.extents:
            if out and kind == ZERO and out[-1][0] == ZERO:
                out[-1] = (ZERO, out[-1][1], out[-1][2] + length)
            else:
                out.append((kind, base + start, length))
        carry = bytes(buf[lo + cut.consumed:head + n])
        base += cut.consumed
        if final:
            return out


def mixed(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(1, 25)):
        n = rng.choice([1, 100, 4095, 4096, 60000, 65536, 69632, 300000, 1_500_000])
        parts.append(bytes(n) if rng.random() < 0.4 else rng.randbytes(n))
    return b"".join(parts)


def test_cuts_do_not_depend_on_piece_or_buffer_sizes():
    rng = random.Random(7)
    for _ in range(25):
        data = mixed(rng)
        whole = cut_all(data)
        assert stream_cut(data, rng, rng.choice([1 << 20, 4 << 20])) == whole


def test_extents_tile_the_stream_and_respect_sizes():
    rng = random.Random(3)
    data = mixed(rng) + rng.randbytes(3_000_000)
    extents = cut_all(data)
    pos = 0
    for n, (kind, start, length) in enumerate(extents):
        assert start == pos and length > 0
        pos += length
        if kind == ZERO:
            assert data[start:start + length] == bytes(length)
            assert length >= ZERO_MIN_RUN and start % 4096 == 0 and length % 4096 == 0
        else:
            assert length <= MAX_SIZE
    assert pos == len(data)
    data_lengths = [e[2] for e in extents if e[0] == DATA]
    assert sum(1 for n in data_lengths if n < MIN_SIZE) <= sum(1 for e in extents if e[0] == ZERO) + 1


def test_zero_run_rules():
    r = os.urandom(100_000)
    # 64 KiB of aligned zeros is a zero extent; 60 KiB is not
    exact = r[:4096 * 5] + bytes(ZERO_MIN_RUN) + r[:50_000]
    assert [e[0] for e in cut_all(exact)].count(ZERO) == 1
    short = r[:4096 * 5] + bytes(ZERO_MIN_RUN - 4096) + r[:50_000]
    assert ZERO not in [e[0] for e in cut_all(short)]
    # 64 KiB of zeros that covers only 15 aligned blocks is data
    unaligned = r[:4096 * 5 + 1] + bytes(ZERO_MIN_RUN) + r[:50_000]
    assert ZERO not in [e[0] for e in cut_all(unaligned)]
    # a sparse image: zero extents merge into one run
    assert cut_all(bytes(10 << 20)) == [(ZERO, 0, 10 << 20)]
    assert cut_all(b"") == []
    assert cut_all(b"\0") == [(DATA, 0, 1)]


def test_shifted_content_keeps_its_cuts():
    rng = random.Random(11)
    body = rng.randbytes(4 << 20)
    a = {s - 1000 for _, s, _ in cut_all(b"x" * 1000 + body)[3:-1]}
    b = {s - 77777 for _, s, _ in cut_all(b"y" * 77777 + body)[3:-1]}
    assert len(a & b) >= 0.9 * len(a)


def test_chunker_id_names_library_and_parameters():
    assert CHUNKER_ID.startswith("pyfastcdc-0.3.")
    for part in ("avg=65536", "min=16384", "max=262144", "zero-split=65536@4096"):
        assert part in CHUNKER_ID
