# fsck and stats: a clean store passes; tampering is found; repair rebuilds what derives from
# other records; the CLI commands print the figures.
import json
import os
import uuid

from tessera import cli
from tessera.engine.chunkstore import ChunkStore, open_index
from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.fsck import collect_stats, run_fsck

MiB = 1 << 20


async def pieces(data, size=MiB):
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def filled(tmp_path, images=2):
    cfg = EngineConfig(data_dir=tmp_path / "data", durable=False, segment_size=2 * MiB)
    index = open_index(cfg)
    store = ChunkStore.open(cfg, index)
    ids = []
    for n in range(images):
        data = os.urandom(MiB + n * 1000) + bytes(MiB)
        ingested = await store.ingest(pieces(data), expected_size=len(data), size_cap=1 << 40)
        image_id = str(uuid.uuid4())
        await index.writer.run(lambda txn: ingested.commit(txn, image_id))
        ids.append(image_id)
    store.close()
    index.close()
    return cfg, ids


async def test_a_clean_store_passes(tmp_path):
    cfg, _ = await filled(tmp_path)
    report = run_fsck(cfg)
    assert report.ok and not report.warnings, report.render()
    assert report.counts["chunks"] > 0 and report.counts["manifests"] == 2
    assert "OK" in report.render()
    assert json.loads(json.dumps(report.as_dict()))["ok"] is True


async def test_a_lowered_refcount_is_an_error_and_repair_restores_it(tmp_path):
    cfg, _ = await filled(tmp_path)
    index = open_index(cfg)
    chunks = index.db("chunks")

    def tamper(txn):
        from tessera.engine.chunkdb import ChunkEntry
        key, raw = next(iter(txn.cursor(db=chunks)))
        entry = ChunkEntry.unpack(raw)
        entry.refcount = 0
        txn.put(bytes(key), entry.pack(), db=chunks)

    index.writer.run_blocking(tamper)
    index.close()
    report = run_fsck(cfg)
    assert not report.ok and any("refcount 0" in e for e in report.errors)
    repaired = run_fsck(cfg, repair=True)
    assert repaired.repaired
    after = run_fsck(cfg)
    assert after.ok and not after.warnings, after.render()


async def test_stray_files_and_tails_are_warnings_that_repair_removes(tmp_path):
    cfg, ids = await filled(tmp_path)
    (cfg.segments_dir / "00000999.seg").write_bytes(b"x" * 5000)
    writable = sorted(cfg.segments_dir.iterdir())[-2]
    with open(writable, "ab") as fh:
        fh.write(b"junk" * 1000)
    report = run_fsck(cfg)
    assert report.ok
    assert any("not in the index" in w for w in report.warnings)
    assert any("uncommitted" in w for w in report.warnings)
    run_fsck(cfg, repair=True)
    assert not (cfg.segments_dir / "00000999.seg").exists()
    after = run_fsck(cfg)
    assert after.ok and not after.warnings, after.render()


async def test_a_missing_segment_is_an_error(tmp_path):
    cfg, _ = await filled(tmp_path)
    os.unlink(sorted(cfg.segments_dir.iterdir())[0])
    report = run_fsck(cfg)
    assert not report.ok


async def test_stats_count_images_bytes_and_chunks(tmp_path):
    cfg = EngineConfig(data_dir=tmp_path / "data", durable=False)
    engine = await Engine.open(cfg)
    data = os.urandom(MiB) + bytes(2 * MiB) + os.urandom(1000)
    rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner="p")
    await engine.upload(rec.id, pieces(data), expected_size=len(data))
    await engine.create_image({}, owner="p")          # a queued image without data
    await engine.aclose()
    stats = collect_stats(cfg)
    assert stats["images"] == 2
    assert stats["logical_bytes"] == len(data)
    assert stats["zero_bytes"] == 2 * MiB
    assert stats["stored_bytes"] == MiB + 1000
    assert stats["chunks"] >= 2


async def test_cli_stats_and_fsck(tmp_path, capsys):
    cfg, _ = await filled(tmp_path, images=1)
    assert cli.main(["stats", "--json", "--data-dir", str(cfg.data_dir)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["manifests"] == 1 and stats["stored_bytes"] == MiB
    assert cli.main(["fsck", "--data-dir", str(cfg.data_dir)]) == 0
    assert "OK" in capsys.readouterr().out
    os.truncate(sorted(cfg.segments_dir.iterdir())[0], 100)
    assert cli.main(["fsck", "--json", "--data-dir", str(cfg.data_dir)]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
