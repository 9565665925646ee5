# Faults on one node's data directory, through the engine facade and `tessera fsck` (the CLI,
# run in process): a full store during an upload and during compaction (clear StorageFull,
# nothing corrupt, work resumes when space returns), LMDB map growth from a tiny map under
# concurrent writers and readers, and damaged segment files (a corrupt record header, a
# corrupt group header, corrupt chunk bytes, a truncated file) that fsck reports and
# `fsck --repair` evacuates: chunks whose bytes still verify are kept, the others are
# reported lost with the images that reference them until their bytes come back.
import json
import os
import random

import pytest
import trio

from tessera import cli
from tessera.engine.chunkdb import ChunkDB, ChunkEntry
from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.errors import StorageFull
from tessera.engine.reaper import Reaper
from tessera.engine.segments import GROUP, segment_name

KiB = 1024
MiB = 1024 * KiB


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


async def pieces(data: bytes, size: int = 64 * KiB):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def new_image(engine: Engine, data: bytes) -> str:
    rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner="p")
    await engine.upload(rec.id, pieces(data), expected_size=len(data))
    return rec.id


async def read_all(engine: Engine, image_id: str) -> bytes:
    out = bytearray()
    async for view in engine.open_download(image_id):
        out += view
    return bytes(out)


def fsck(cfg: EngineConfig, *extra: str, capsys) -> dict:
    """`tessera fsck --data-dir D --json [extra]`, in process; the JSON report."""
    capsys.readouterr()
    code = cli.main(["fsck", "--data-dir", str(cfg.data_dir), "--json", *extra])
    report = json.loads(capsys.readouterr().out)
    assert code == (0 if report["ok"] else 1)
    return report


# -- a full store ---------------------------------------------------------------------------

async def test_store_full_during_an_upload_then_space_returns(tmp_path, capsys):
    cfg = EngineConfig(data_dir=tmp_path / "d", durable=True, segment_size=1 * MiB,
                       max_stored_bytes=3 * MiB)
    engine = await Engine.open(cfg)
    first = blob(2 * MiB, 1)
    one = await new_image(engine, first)
    rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner="p")
    before = engine.chunks.segments.total_bytes
    with pytest.raises(StorageFull) as caught:
        await engine.upload(rec.id, pieces(blob(2 * MiB, 2)), expected_size=2 * MiB)
    assert "full" in caught.value.message
    assert engine.get_image(rec.id).status == "queued"
    assert engine.chunks.segments.total_bytes == before        # no half-written group kept
    assert await read_all(engine, one) == first
    await engine.aclose()
    assert fsck(cfg, capsys=capsys)["ok"]
    # space returns (a bigger cap): the same upload succeeds, nothing was lost meanwhile
    cfg2 = EngineConfig(data_dir=cfg.data_dir, durable=True, segment_size=1 * MiB,
                        max_stored_bytes=8 * MiB)
    engine = await Engine.open(cfg2)
    try:
        await engine.upload(rec.id, pieces(blob(2 * MiB, 2)), expected_size=2 * MiB)
        assert await read_all(engine, rec.id) == blob(2 * MiB, 2)
        assert await read_all(engine, one) == first
    finally:
        await engine.aclose()
    assert fsck(cfg2, capsys=capsys)["ok"]


async def test_store_full_during_compaction_then_space_returns(tmp_path, capsys):
    cfg = EngineConfig(data_dir=tmp_path / "d", durable=True, segment_size=1 * MiB,
                       compact_below=0.9)
    engine = await Engine.open(cfg)
    datas = {}
    for i in range(12):
        data = blob(300 * KiB, 10 + i)
        datas[await new_image(engine, data)] = data
    for image_id in list(datas)[::2]:            # half the images go: segments half dead
        await engine.delete_image(image_id)
        del datas[image_id]
    segments = engine.chunks.segments
    full = segments.max_stored_bytes = segments.total_bytes    # the disk is exactly full
    reaper = Reaper(engine.chunks)
    with pytest.raises(StorageFull):
        await reaper.run_once(grace=0.0)
    assert segments.total_bytes == full                 # no half-copied segment left
    for image_id, data in datas.items():
        assert await read_all(engine, image_id) == data
    await engine.aclose()
    report = fsck(cfg, capsys=capsys)
    assert report["ok"], report
    engine = await Engine.open(cfg)                      # space returns (no cap)
    try:
        result = await Reaper(engine.chunks).run_once(grace=0.0)
        assert result.compacted_segments >= 1
        for image_id, data in datas.items():
            assert await read_all(engine, image_id) == data
    finally:
        await engine.aclose()
    assert fsck(cfg, capsys=capsys)["ok"]


# -- LMDB map growth ------------------------------------------------------------------------

async def test_lmdb_map_grows_under_concurrent_load(tmp_path, capsys):
    cfg = EngineConfig(data_dir=tmp_path / "d", durable=False, map_size=256 * KiB,
                       segment_size=4 * MiB)
    engine = await Engine.open(cfg)
    start = engine.index.env.info()["map_size"]
    uploaded: dict[str, bytes] = {}
    created = []

    async def creator(k: int) -> None:
        for i in range(60):
            rec = await engine.create_image({"name": f"w{k}-{i}" + "n" * 200,
                                             "tags": [f"t{j}" for j in range(20)]}, owner="p")
            created.append(rec.id)

    async def uploader(k: int) -> None:
        for i in range(4):
            data = blob(200 * KiB, 100 * k + i)
            uploaded[await new_image(engine, data)] = data

    async def reader() -> None:
        from tessera.engine.engine import ListQuery
        for _ in range(60):
            engine.list_images(ListQuery(viewer_project=None, viewer_is_admin=True,
                                         filters={}, limit=50))
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        for k in range(4):
            nursery.start_soon(creator, k)
        for k in range(3):
            nursery.start_soon(uploader, k)
        nursery.start_soon(reader)
    grown = engine.index.env.info()["map_size"]
    assert grown > start
    assert len(created) == 240
    for image_id in created[::37]:
        assert engine.get_image(image_id).status == "queued"
    for image_id, data in uploaded.items():
        assert await read_all(engine, image_id) == data
    await engine.aclose()
    assert fsck(cfg, capsys=capsys)["ok"]


# -- damaged segment files ------------------------------------------------------------------

async def damaged_store(tmp_path):
    """Six images in 1 MiB segments; returns cfg, {image id: bytes}, and for each image the
    chunk entries of its first chunk."""
    cfg = EngineConfig(data_dir=tmp_path / "d", durable=False, segment_size=1 * MiB)
    engine = await Engine.open(cfg)
    datas = {}
    for i in range(6):
        data = blob(400 * KiB, 50 + i)
        datas[await new_image(engine, data)] = data
    db = ChunkDB(engine.index)
    firsts = {}
    for image_id in datas:
        cid = engine.chunks.image_chunks(image_id)[0]
        with engine.index.read() as txn:
            firsts[image_id] = (cid, ChunkEntry.unpack(txn.get(cid, db=db.chunks)))
    await engine.aclose()
    return cfg, datas, firsts


def flip(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


async def check_images(cfg, datas: dict, lost: set = frozenset()) -> None:
    engine = await Engine.open(cfg)
    try:
        for image_id, data in datas.items():
            if image_id in lost:
                with pytest.raises(Exception):
                    await read_all(engine, image_id)
            else:
                assert await read_all(engine, image_id) == data
    finally:
        await engine.aclose()


async def test_corrupt_record_header_is_reported_and_repaired_without_loss(tmp_path, capsys):
    cfg, datas, firsts = await damaged_store(tmp_path)
    victim = list(datas)[2]
    cid, entry = firsts[victim]
    flip(cfg.segments_dir / segment_name(entry.segment), entry.header + 10)
    report = fsck(cfg, capsys=capsys)
    assert not report["ok"]
    assert any("record header does not match" in e for e in report["errors"])
    assert any(victim in e for e in report["errors"])
    report = fsck(cfg, "--repair", capsys=capsys)
    assert any("quarantine" in r for r in report["repaired"])
    assert any("0 lost" in r for r in report["repaired"])     # the bytes still verified
    assert (cfg.data_dir / "quarantine" / segment_name(entry.segment)).exists()
    assert fsck(cfg, capsys=capsys)["ok"]
    await check_images(cfg, datas)


async def test_corrupt_group_header_is_reported_and_repaired_without_loss(tmp_path, capsys):
    cfg, datas, firsts = await damaged_store(tmp_path)
    cid, entry = firsts[list(datas)[0]]
    flip(cfg.segments_dir / segment_name(entry.segment), 0 + GROUP.size - 6)
    report = fsck(cfg, capsys=capsys)
    assert any("bad group header" in e for e in report["errors"])
    fsck(cfg, "--repair", capsys=capsys)
    assert fsck(cfg, capsys=capsys)["ok"]
    await check_images(cfg, datas)


async def test_corrupt_chunk_bytes_lose_one_chunk_and_the_image_says_so(tmp_path, capsys):
    cfg, datas, firsts = await damaged_store(tmp_path)
    victim = list(datas)[3]
    cid, entry = firsts[victim]
    flip(cfg.segments_dir / segment_name(entry.segment), entry.offset + 100)
    report = fsck(cfg, capsys=capsys)
    assert any("fail BLAKE3" in e for e in report["errors"])
    report = fsck(cfg, "--repair", capsys=capsys)
    assert any("1 lost" in r for r in report["repaired"])
    report = fsck(cfg, capsys=capsys)
    assert not report["ok"]
    assert report["errors"] == [f"chunk {cid.hex()} is lost: referenced, not held here",
                                f"image {victim} references 1 lost or damaged chunk(s)"]
    await check_images(cfg, datas, lost={victim})
    # the same bytes arrive again (a re-upload here; a peer in a cluster): all is whole
    engine = await Engine.open(cfg)
    try:
        await new_image(engine, datas[victim])
        assert await read_all(engine, victim) == datas[victim]
    finally:
        await engine.aclose()
    assert fsck(cfg, capsys=capsys)["ok"]


async def test_truncated_segment_keeps_the_chunks_before_the_cut(tmp_path, capsys):
    cfg, datas, firsts = await damaged_store(tmp_path)
    cid, entry = firsts[list(datas)[-1]]
    path = cfg.segments_dir / segment_name(entry.segment)
    os.truncate(path, entry.offset + 10)          # cut inside this image's first chunk
    report = fsck(cfg, capsys=capsys)
    assert not report["ok"]
    assert any("bytes, the index committed" in e for e in report["errors"])
    report = fsck(cfg, "--repair", capsys=capsys)
    after = fsck(cfg, capsys=capsys)
    hit = {e.split()[1] for e in after["errors"] if e.startswith("image ")}
    assert list(datas)[-1] in hit
    assert all(e.startswith(("chunk ", "image ")) for e in after["errors"])
    await check_images(cfg, datas, lost=hit)
    kept = [i for i in datas if i not in hit]
    assert kept                                      # the other images were not touched


async def test_compaction_never_strands_entries_committed_during_its_copy(tmp_path, capsys):
    """Regression (found by test_crash_server): an ingest lets go of its lease inside its
    commit job, before the commit, so a compaction may copy a segment from a snapshot that
    misses the entries being committed into it. The move then sees the segment changed and
    the compaction is rolled back instead of leaving those entries in a removed segment."""
    cfg = EngineConfig(data_dir=tmp_path / "d", durable=False, segment_size=4 * MiB)
    engine = await Engine.open(cfg)
    try:
        gone = await new_image(engine, blob(200 * KiB, 1))
        number = next(iter(engine.chunks.segments.sizes()))
        await engine.delete_image(gone)
        reaper = Reaper(engine.chunks)
        await reaper.run_once(grace=0.0, compact=False)          # the segment is now dead
        lease = engine.chunks.segments.lease()
        moved, seen = await trio.to_thread.run_sync(reaper._copy_live, number, lease)
        data = blob(200 * KiB, 2)
        late = await new_image(engine, data)                       # lands in the same segment
        assert number in {e for e in engine.chunks.segments.sizes()}
        done = await engine.index.writer.run(
            lambda txn: reaper._move(txn, number, moved, lease, seen))
        assert done is False
        engine.chunks.segments.rollback(lease)
        engine.chunks.segments.release(lease)
        assert await read_all(engine, late) == data
        result = await reaper.run_once(grace=0.0)                  # a later round is fine
        assert await read_all(engine, late) == data
        assert not result.skipped
    finally:
        await engine.aclose()
    assert fsck(cfg, capsys=capsys)["ok"]
