# Crash safety: a child process uploads images through the engine facade (durable=True) and
# is SIGKILLed at random moments (mid-chunk, mid-commit, right after an acknowledgement).
# After every kill the store is reopened: every acknowledged image is active and reads back
# identical, no active image misses data, and fsck passes.
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import blake3

from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.fsck import run_fsck

KILLS = 22
NAMESPACE = uuid.UUID("6c1d2b7e-3f0a-4c55-9a55-1f3e0b7c2d11")

CHILD = textwrap.dedent('''
    import sys, uuid
    from pathlib import Path
    import trio
    from tessera.engine.config import EngineConfig
    from tessera.engine.engine import Engine
    from tessera.engine.errors import Conflict

    sys.path.insert(0, sys.argv[3])
    from crashdata import image_bytes, image_id

    async def main(data_dir, first):
        cfg = EngineConfig(data_dir=Path(data_dir), durable=True, segment_size=2 << 20)
        engine = await Engine.open(cfg)
        n = first
        while True:
            iid = image_id(n)
            try:
                await engine.create_image({"id": iid, "disk_format": "raw",
                                           "container_format": "bare"}, owner="p")
            except Conflict:            # created just before the previous kill
                if engine.get_image(iid).status != "queued":
                    n += 1
                    continue
            data = image_bytes(n)

            async def source():
                for i in range(0, len(data), 65536):
                    yield data[i:i + 65536]

            print("START", n, flush=True)
            await engine.upload(iid, source(), expected_size=len(data))
            print("ACK", n, flush=True)
            n += 1

    trio.run(main, sys.argv[1], int(sys.argv[2]))
''')

DATA = textwrap.dedent('''
    import uuid
    import blake3
    NAMESPACE = uuid.UUID("6c1d2b7e-3f0a-4c55-9a55-1f3e0b7c2d11")

    def image_id(n):
        return str(uuid.uuid5(NAMESPACE, str(n)))

    def image_bytes(n):
        """About 0.5-2.5 MiB: unique bytes, zeros, and a section every image shares."""
        own = blake3.blake3(b"img%d" % n).digest(length=300_000 + (n * 7919) % 1_500_000)
        shared = blake3.blake3(b"shared").digest(length=600_000)
        return own[:100_000] + shared + bytes(200_000 + (n % 3) * 65536) + own[100_000:]
''')


class ChildLines:
    """The child's "START n" / "ACK n" lines, read straight from the pipe's descriptor.

    One reader only (mixing a buffered readline with communicate() loses what the buffer
    holds). A line counts only once its newline arrived; anything else the child printed is
    not part of the protocol and is skipped.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = b""
        self.ready: list[tuple[str, int]] = []

    def next(self) -> tuple[str, int] | None:
        while not self.ready:
            data = os.read(self.fd, 65536)
            if not data:
                return None                        # EOF; an unterminated fragment is dropped
            *complete, self.pending = (self.pending + data).split(b"\n")
            for raw in complete:
                match = LINE.fullmatch(raw)
                if match:
                    self.ready.append((match[1].decode(), int(match[2])))
        return self.ready.pop(0)


LINE = re.compile(rb"(START|ACK) (\d+)")


def load_data_module(tmp_path):
    (tmp_path / "crashdata.py").write_text(DATA)
    namespace: dict = {}
    exec(compile(DATA, "crashdata", "exec"), namespace)
    return namespace["image_id"], namespace["image_bytes"]


async def verify(cfg, acked: set[int], upto: int, image_id, image_bytes) -> int:
    engine = await Engine.open(cfg)
    active = 0
    interrupted = engine.chunks.recovered.get("truncated", 0) > 0
    try:
        for n in range(upto + 1):
            try:
                rec = engine.get_image(image_id(n))
            except Exception:
                assert n not in acked, f"acknowledged image {n} is gone"
                continue
            if n in acked:
                assert rec.status == "active", (n, rec.status)
            if rec.status != "active":
                interrupted = True               # killed between create/CAS and commit
                continue
            active += 1
            expected = image_bytes(n)
            got = bytearray()
            async for view in engine.open_download(image_id(n)):
                got += view
            assert bytes(got) == expected, f"image {n} reads back wrong"
            assert rec.size == len(expected)
            assert rec.blake3 in (None, blake3.blake3(expected).hexdigest())
    finally:
        await engine.aclose()
    report = run_fsck(cfg)
    assert report.ok, report.render()
    return interrupted


async def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path):
    image_id, image_bytes = load_data_module(tmp_path)
    (tmp_path / "child.py").write_text(CHILD)
    data_dir = tmp_path / "data"
    cfg = EngineConfig(data_dir=data_dir, durable=True, segment_size=2 << 20)
    rng = random.Random(1234)
    acked: set[int] = set()
    next_n = 0
    highest = -1
    modes = {"timer": 0, "at_start": 0, "after_ack": 0}
    interrupted = 0
    for kill in range(KILLS):
        mode = ["timer", "at_start", "after_ack"][kill % 3]
        modes[mode] += 1
        err_path = tmp_path / f"child-{kill}.err"
        with open(err_path, "wb") as err_file:
            proc = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(data_dir),
                                     str(next_n), str(tmp_path)],
                                    stdout=subprocess.PIPE, stderr=err_file)
        lines = ChildLines(proc.stdout.fileno())
        target = rng.randrange(1, 3)
        deadline = time.monotonic() + 20
        starts = acks = 0
        delay = rng.uniform(0, 0.08)
        try:
            while time.monotonic() < deadline:
                event = lines.next()
                if event is None:
                    break
                word, num = event
                highest = max(highest, num)
                if word == "ACK":
                    acked.add(num)
                    acks += 1
                    if mode == "after_ack" and acks >= target:
                        break
                    if mode == "timer" and acks >= target:
                        time.sleep(delay)
                        break
                elif word == "START":
                    starts += 1
                    if mode == "at_start" and starts >= target:
                        time.sleep(delay)        # somewhere inside the ingest or commit
                        break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        while (event := lines.next()) is not None:   # acknowledged before the kill landed
            word, num = event
            highest = max(highest, num)
            if word == "ACK":
                acked.add(num)
        proc.stdout.close()
        err = err_path.read_text(errors="replace")
        assert proc.returncode == -signal.SIGKILL, err[-3000:]
        next_n = highest + 1
        interrupted += await verify(cfg, acked, highest, image_id, image_bytes)
    assert len(acked) >= KILLS                     # the children really made progress
    assert interrupted >= 3                        # kills did land inside uploads
    assert all(modes.values())
