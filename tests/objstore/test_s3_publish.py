# The metadata write quorum of an s3 store in a cluster (three real in-process engines, real
# peer sockets, the test's radosgw bucket; R=3, W=2): an upload into the s3 store returns
# only once W nodes hold the image's document, so right after it returns a peer already
# has the record active with the store's chunk locations (checked at once, no waiting);
# with both peers partitioned off, the upload fails with Unavailable (HTTP 503) naming the
# write quorum, the image is active nowhere and queued on the writer, its packs are garbage
# the reaper removes; once the peers are back the same upload succeeds. A copy-image into
# the s3 store takes the same quorum (the task fails, the image keeps its other store).
import os

import pytest
import trio

from tessera.engine.errors import Unavailable
from tessera.engine.objstore import shared
from tessera.engine.objstore.check import check_index
from tessera.http.errors import status_for

MiB = 1024 * 1024


async def pieces(data: bytes):
    for i in range(0, len(data), MiB):
        yield data[i:i + MiB]


async def create(engine) -> str:
    rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner="p")
    return rec.id


def tier(engine):
    return engine.stores.get("obj").tier


def published(engine, image_id: str, chunk_ids: list[bytes]) -> bool:
    """The node holds the record active in "obj" and every chunk's bucket location."""
    with engine.index.read() as txn:
        rec = engine.catalog.load(txn, image_id)
    if rec is None or rec.status != "active" or "obj" not in rec.stores:
        return False
    part = shared.export(tier(engine), image_id)
    return part is not None and sorted(bytes(loc[0]) for loc in part["locs"]) == \
        sorted(chunk_ids)


def record(engine, image_id: str):
    with engine.index.read() as txn:
        return engine.catalog.load(txn, image_id)


async def wait_task(engine, task_id: str):
    with trio.fail_after(30):
        while engine.get_task(task_id).status not in ("success", "failure"):
            await trio.sleep(0.02)
    return engine.get_task(task_id)


async def test_s3_upload_needs_the_metadata_quorum(s3_cluster):
    await s3_cluster(scenario, replicas=3, write_quorum=2, background=("a",))


async def scenario(engines, nodes) -> None:
    a, b, c = engines["a"], engines["b"], engines["c"]

    # whole cluster: when the upload returns, W=2 nodes already hold the document
    x_data = os.urandom(5 * MiB)
    x = await a.upload(await create(a), pieces(x_data), expected_size=len(x_data),
                       store="obj")
    x_ids = a.stores.get("obj").image_chunks(x.id)
    assert x.status == "active" and x_ids
    holders = [n for n, e in engines.items() if published(e, x.id, x_ids)]
    assert "a" in holders and len(holders) >= 2, holders

    # both peers cut off: fewer than W nodes can take the document
    main_data = os.urandom(2 * MiB)
    z = await a.upload(await create(a), pieces(main_data), expected_size=len(main_data),
                       store="main")
    before = set(await tier(a).client.list("packs/"))
    await nodes["b"].partition()
    await nodes["c"].partition()
    y_id = await create(a)
    y_data = os.urandom(3 * MiB)
    with pytest.raises(Unavailable) as failed:
        await a.upload(y_id, pieces(y_data), expected_size=len(y_data), store="obj")
    message = str(failed.value)
    assert "Not enough replicas" in message and "write_quorum=2" in message, message
    assert "unreachable: b, c" in message, message
    assert status_for(failed.value) == 503                   # PUT .../file answers 503
    y = record(a, y_id)
    assert y.status == "queued" and y.stores == () and y.size is None
    assert record(b, y_id) is None and record(c, y_id) is None     # active nowhere
    assert a.stores.get("obj").image_chunks(y_id) == []             # no manifest left
    # the failed upload's packs are garbage: the reaper deletes them, nothing dangles
    assert set(await tier(a).client.list("packs/")) > before
    await a.processes.reap(grace=0)
    assert set(await tier(a).client.list("packs/")) == before
    assert check_index(tier(a)) == []

    # copy-image into the s3 store takes the same quorum: the task fails, z keeps "main"
    copy = {"method": {"name": "copy-image"}}
    task = await a.import_image(z.id, method="copy-image", import_req=copy, stores=("obj",))
    task = await wait_task(a, task.id)
    assert task.status == "failure" and "Not enough replicas" in task.message, task.message
    z_now = record(a, z.id)
    assert z_now.status == "active" and z_now.stores == ("main",)
    assert a.stores.get("obj").image_chunks(z.id) == []

    # peers back: the same upload and copy succeed, a peer holds each document at once
    await nodes["b"].heal()
    await nodes["c"].heal()
    y = await a.upload(y_id, pieces(y_data), expected_size=len(y_data), store="obj")
    y_ids = a.stores.get("obj").image_chunks(y_id)
    assert y.status == "active" and y_ids
    assert sum(published(e, y_id, y_ids) for e in engines.values()) >= 2
    task = await a.import_image(z.id, method="copy-image", import_req=copy, stores=("obj",))
    task = await wait_task(a, task.id)
    assert task.status == "success", task.message
    z_ids = a.stores.get("obj").image_chunks(z.id)
    assert sum(published(e, z.id, z_ids) for e in engines.values()) >= 2
