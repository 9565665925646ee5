# Image data through the facade: upload, download with ranges, delete, the CAS that lets one
# of two concurrent uploads win, failure and cancellation reverting to queued, deletion
# during upload (Gone), staging.
import hashlib
import os

import blake3
import pytest
import trio

from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.errors import (Conflict, Gone, InvalidInput, InvalidTransition, NotFound,
                                   TooLarge)


@pytest.fixture
async def engine(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False,
                                         image_size_cap=4 << 20))
    yield eng
    await eng.aclose()


def payload(n=1 << 20, seed=1):
    rnd = __import__("random").Random(seed)
    return rnd.randbytes(n // 2) + bytes(n // 4) + rnd.randbytes(n - n // 2 - n // 4)


async def pieces(data, size=65536, gate=None, at=None):
    for i in range(0, len(data), size):
        if gate is not None and i >= at:
            await gate.wait()
            gate = None
        yield memoryview(data)[i:i + size]
        await trio.sleep(0)


async def read_all(download):
    out = bytearray()
    async for view in download:
        out += view
    return bytes(out)


async def new_image(engine, **fields):
    return await engine.create_image({"disk_format": "raw", "container_format": "bare",
                                      **fields}, owner="p1")


async def test_upload_download_ranges(engine):
    data = payload()
    img = await new_image(engine)
    rec = await engine.upload(img.id, pieces(data), expected_size=len(data))
    assert rec.status == "active" and rec.size == len(data) == rec.virtual_size
    assert rec.checksum == hashlib.md5(data).hexdigest()
    assert (rec.os_hash_algo, rec.os_hash_value) == ("sha512", hashlib.sha512(data).hexdigest())
    assert rec.blake3 == blake3.blake3(data).hexdigest() and rec.stores == ("default",)
    assert engine.get_image(img.id) == rec
    dl = engine.open_download(img.id)
    assert (dl.start, dl.end, dl.total, dl.record) == (0, len(data), len(data), rec)
    assert await read_all(dl) == data
    for start, end in ((0, 1), (100, 70000), (len(data) - 5, len(data)), (300000, 600000)):
        assert await read_all(engine.open_download(img.id, start, end)) == data[start:end]
    with pytest.raises(InvalidInput):
        engine.open_download(img.id, 10, len(data) + 1)
    stats = engine.stats()
    assert stats["images"] == 1 and stats["logical_bytes"] == len(data)
    assert 0 < stats["stored_bytes"] <= len(data) and stats["chunks"] > 0


async def test_qcow2_virtual_size_unknown(engine):
    # outside container_format=bare the declared format is not matched against the bytes
    img = await new_image(engine, disk_format="qcow2", container_format="ovf")
    rec = await engine.upload(img.id, pieces(b"x" * 1000), expected_size=None)
    assert rec.size == 1000 and rec.virtual_size is None


async def test_no_data_image_downloads_nothing(engine):
    img = await new_image(engine)
    dl = engine.open_download(img.id)
    assert dl.record.size is None and await read_all(dl) == b""


async def test_data_is_immutable_once_active(engine):
    img = await new_image(engine)
    await engine.upload(img.id, pieces(b"abc"), expected_size=3)
    with pytest.raises(InvalidTransition) as info:
        await engine.upload(img.id, pieces(b"def"), expected_size=3)
    assert info.value.message == "Image status transition from active to saving is not allowed"
    assert await read_all(engine.open_download(img.id)) == b"abc"


async def test_formats_must_be_set(engine):
    img = await engine.create_image({"disk_format": "raw"}, owner=None)
    with pytest.raises(InvalidInput) as info:
        await engine.upload(img.id, pieces(b"abc"), expected_size=None)
    assert info.value.message == "Property container_format must be set prior to saving data."
    bare = await engine.create_image({}, owner=None)
    with pytest.raises(InvalidInput) as info:
        await engine.upload(bare.id, pieces(b"abc"), expected_size=None)
    assert info.value.message == \
        "Properties disk_format, container_format must be set prior to saving data."
    assert engine.get_image(img.id).status == "queued"


async def test_concurrent_uploads_one_wins(engine):
    data = payload(512 << 10, seed=3)
    img = await new_image(engine)
    outcomes = []

    async def upload(seed):
        try:
            await engine.upload(img.id, pieces(payload(512 << 10, seed=seed)), expected_size=None)
            outcomes.append(seed)
        except Conflict as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        for seed in (3, 4, 5):
            nursery.start_soon(upload, seed)
    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(winners) == 1 and len(outcomes) == 3
    assert all(isinstance(o, InvalidTransition) for o in outcomes if o not in winners)
    got = await read_all(engine.open_download(img.id))
    assert got == payload(512 << 10, seed=winners[0])
    assert winners[0] != 3 or got == data


@pytest.mark.parametrize("expected", [10, 10_000_000])
async def test_size_mismatch_reverts_to_queued(engine, expected):
    img = await new_image(engine)
    with pytest.raises((InvalidInput, TooLarge)):
        await engine.upload(img.id, pieces(b"x" * 5000), expected_size=expected)
    rec = engine.get_image(img.id)
    assert rec.status == "queued" and rec.size is None and rec.checksum is None
    # and the image can still be uploaded
    assert (await engine.upload(img.id, pieces(b"y" * 10), expected_size=10)).size == 10


async def test_size_cap(engine):
    img = await new_image(engine)
    with pytest.raises(TooLarge):
        await engine.upload(img.id, pieces(payload(5 << 20)), expected_size=None)
    assert engine.get_image(img.id).status == "queued"


async def test_source_failure_and_cancellation_revert(engine):
    img = await new_image(engine)

    async def broken():
        yield b"a" * 70000
        raise OSError("client went away")

    with pytest.raises(OSError):
        await engine.upload(img.id, broken(), expected_size=None)
    assert engine.get_image(img.id).status == "queued"
    gate = trio.Event()
    with trio.move_on_after(0.5) as scope:
        await engine.upload(img.id, pieces(payload(), gate=gate, at=200000), expected_size=None)
    assert scope.cancelled_caught
    assert engine.get_image(img.id).status == "queued"


async def test_delete_during_upload_is_gone(engine):
    img = await new_image(engine)
    gate = trio.Event()
    result = []

    async def upload():
        try:
            await engine.upload(img.id, pieces(payload(), gate=gate, at=300000),
                                expected_size=None)
        except Gone as exc:
            result.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(upload)
        while engine.get_image(img.id).status != "saving":
            await trio.sleep(0.01)
        await engine.delete_image(img.id)
        gate.set()
    assert len(result) == 1
    assert "could not be found after upload" in result[0].message
    with pytest.raises(NotFound):
        engine.get_image(img.id)
    assert engine.stats()["logical_bytes"] == 0


async def test_delete_releases_data(engine):
    data = payload(seed=9)
    a = await new_image(engine)
    b = await new_image(engine)
    await engine.upload(a.id, pieces(data), expected_size=None)
    await engine.upload(b.id, pieces(data), expected_size=None)  # dedup: same chunks
    with engine.index.read() as txn:
        assert engine.chunks.has_manifest(txn, a.id)
    await engine.delete_image(a.id)
    with engine.index.read() as txn:
        assert not engine.chunks.has_manifest(txn, a.id)
    assert await read_all(engine.open_download(b.id)) == data
    with pytest.raises(NotFound):
        engine.open_download(a.id)
    assert engine.chunks.stats()["unreferenced_chunks"] == 0
    await engine.delete_image(b.id)
    assert engine.chunks.stats()["unreferenced_chunks"] > 0


async def test_deactivated_image_is_readable(engine):
    img = await new_image(engine)
    await engine.upload(img.id, pieces(b"hello"), expected_size=5)
    await engine.deactivate(img.id)
    assert await read_all(engine.open_download(img.id)) == b"hello"


async def test_stage(engine):
    data = payload(300000, seed=2)
    img = await engine.create_image({}, owner=None)  # staging needs no formats
    size = await engine.stage(img.id, pieces(data), expected_size=len(data))
    assert size == len(data) and engine.get_image(img.id).status == "uploading"
    path = engine.cfg.staging_dir / img.id
    assert path.read_bytes() == data
    with engine.index.read() as txn:
        assert engine.data.staged(txn, img.id)["size"] == len(data)
    with pytest.raises(InvalidTransition):
        await engine.stage(img.id, pieces(b"x"), expected_size=None)
    await engine.delete_image(img.id)
    assert not path.exists()


async def test_stage_failure_reverts_and_removes_file(engine):
    img = await engine.create_image({}, owner=None)
    with pytest.raises(InvalidInput):
        await engine.stage(img.id, pieces(b"x" * 100), expected_size=50)
    assert engine.get_image(img.id).status == "queued"
    assert not os.path.exists(engine.cfg.staging_dir / img.id)
    with pytest.raises(TooLarge):
        await engine.stage(img.id, pieces(payload(5 << 20)), expected_size=None)
    assert engine.get_image(img.id).status == "queued"
    assert not os.path.exists(engine.cfg.staging_dir / img.id)


async def test_durable_upload_survives_reopen(tmp_path):
    data = payload(600000, seed=11)
    eng = await Engine.open(EngineConfig(data_dir=tmp_path))  # durable=True: fsync + sync
    img = await new_image(eng, name="kept", os_distro="debian")
    rec = await eng.upload(img.id, pieces(data), expected_size=len(data))
    await eng.aclose()
    eng = await Engine.open(EngineConfig(data_dir=tmp_path))
    try:
        assert eng.get_image(img.id) == rec
        assert await read_all(eng.open_download(img.id, 1000, 500000)) == data[1000:500000]
        from tessera.engine.listing import ListQuery
        assert [r.id for r in eng.list_images(ListQuery("p1", False)).images] == [img.id]
    finally:
        await eng.aclose()


async def test_download_closed_early(engine):
    data = payload(2 << 20, seed=5)
    img = await new_image(engine)
    await engine.upload(img.id, pieces(data), expected_size=None)
    dl = engine.open_download(img.id)
    got = 0
    async for view in dl:
        got += len(view)
        break
    await dl.aclose()
    assert 0 < got < len(data)
    assert await read_all(engine.open_download(img.id, 5, 10)) == data[5:10]
    nodata = await new_image(engine)
    await engine.open_download(nodata.id).aclose()  # nothing to close: still fine
