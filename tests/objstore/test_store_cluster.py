# An s3 store shared by the nodes of a cluster (same store id, same bucket), with three real
# in-process engines and real peer sockets: a peer reads an image written by another node
# straight from the bucket (its cache empty, nothing from peers); after the writer repacked
# a pack, a peer whose mapping is stale falls back to the peers and still gets the right
# bytes; a delete reaches the peers and every object leaves the bucket once, deleted by its
# writer only.
import hashlib
import os

import trio

from tessera.engine.chunkput import held_bytes
from tessera.engine.objstore.check import check_index

MiB = 1024 * 1024


async def pieces(data: bytes):
    for i in range(0, len(data), MiB):
        yield data[i:i + MiB]


async def upload(engine, data: bytes):
    rec = await engine.create_image({"disk_format": "raw", "container_format": "bare"},
                                    owner="p")
    return await engine.upload(rec.id, pieces(data), expected_size=len(data), store="obj")


async def sha(engine, image_id: str) -> str:
    h = hashlib.sha256()
    async for view in engine.open_download(image_id):
        h.update(view)
    return h.hexdigest()


async def until(predicate, what: str, timeout: float = 15.0) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.02)
    assert predicate(), what


def tier(engine):
    return engine.stores.get("obj").tier


def rows(engine) -> dict:
    t = tier(engine)
    with t.store.index.read() as txn:
        return t.db.rows(txn)


async def test_nodes_share_an_s3_store(s3_cluster, s3_bucket):
    async def run(engines, nodes):
        await scenario(engines, nodes, s3_bucket)

    await s3_cluster(run, replicas=2, write_quorum=2)


async def scenario(engines, nodes, bucket) -> None:
    a, b, c = engines["a"], engines["b"], engines["c"]
    x_data = os.urandom(8 * MiB)
    y_data = x_data[:MiB] + os.urandom(3 * MiB)      # shares X's first chunks
    x = await upload(a, x_data)
    y = await upload(a, y_data)
    assert x.stores == ("obj",) and y.stores == ("obj",)
    # the bucket is the durable copy: no peer was asked to hold the chunks
    x_ids = a.stores.get("obj").image_chunks(x.id)
    for peer in (b, c):
        assert peer.replica.missing(x_ids) == x_ids          # not in the main store
    for peer in (b, c):
        await until(lambda p=peer: p.replica.stamp_of(y.id) == a.replica.stamp_of(y.id)
                    and p.replica.stamp_of(x.id) == a.replica.stamp_of(x.id),
                    "the documents reach the peers")

    # b never held a chunk: it reads X from the bucket through the other writer's packs
    tb = tier(b)
    assert tb.store.image_chunks(x.id) == x_ids                     # the manifest
    assert held_bytes(tb.store, x_ids) == {}                         # an empty cache
    assert all(r.writer == tier(a).writer for r in rows(b).values()) and rows(b)
    assert check_index(tb) == []
    gets = tb.reader.stats["gets"]
    assert await sha(b, x.id) == hashlib.sha256(x_data).hexdigest()
    assert tb.reader.stats["gets"] > gets
    assert nodes["b"].fetcher.fetched_bytes == 0             # nothing came from peers

    # a deletes X and repacks X's pack (only Y's shared chunks live in it); c's mapping
    # of those chunks still names the old pack: its read falls back to the peers
    await a.delete_image(x.id)
    await a.processes.reap(grace=0)
    last = a.processes.reapers["obj"].last
    assert last.repacked_objects == 1 and last.new_objects == 1
    await until(lambda: c.replica.stamp_of(x.id) == a.replica.stamp_of(x.id),
                "the delete reaches c")
    assert await sha(c, y.id) == hashlib.sha256(y_data).hexdigest()
    assert nodes["c"].fetcher.fetched_bytes > 0              # the moved chunks
    assert tier(c).reader.stats["gets"] > 0                  # the rest from the bucket

    # a deletes Y: the delete reaches the peers, their reapers drop the rows of a's packs
    # without deleting them, a's reaper deletes each of its objects once
    await a.delete_image(y.id)
    for peer in (b, c):
        await until(lambda p=peer: p.replica.stamp_of(y.id) == a.replica.stamp_of(y.id),
                    "the delete reaches the peers")
        await until(lambda p=peer: p.stores.get("obj").image_chunks(y.id) == [],
                    "the peer's copy in obj is released")
    for peer in (b, c):
        await peer.processes.reap(grace=0)
        assert peer.processes.reapers["obj"].last is not None      # no collection error
        assert peer.processes.reapers["obj"].last.skipped == []
        assert rows(peer) == {}
        assert tier(peer).stats["objects_deleted"] == 0
        assert check_index(tier(peer)) == []
    await a.processes.reap(grace=0)
    ta = tier(a)
    assert rows(a) == {}
    written = ta.stats["objects_written"] + a.processes.reapers["obj"].collected.new_objects
    assert ta.stats["objects_deleted"] == written == 3
    assert await ta.client.list("packs/") == []
