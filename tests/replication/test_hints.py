# Hinted handoff survives a restart of the node holding the hints (real processes on
# 127.0.0.1): c is down while a accepts uploads (W=2 on a and b), a's hints for c are
# persisted; a restarts, then c comes back, and a's updater delivers c's chunks. The
# anti-entropy interval is an hour, so only the hints can have brought them.
import os

MiB = 1024 * 1024


def test_hints_persist_across_a_restart_and_are_delivered(tmp_path, cluster_factory,
                                                          cluster_reports, wait_for):
    a, b, c = cluster_factory(tmp_path, interval=3600.0, start=True)
    reports = cluster_reports
    images = {}
    c.stop()
    for i in range(3):
        data = os.urandom(MiB + 1000 * i)
        image_id = a.create(name=f"h{i}")
        assert a.upload(image_id, data) == 204
        images[image_id] = data
    queued = wait_for(lambda: reports(a.config)["a"]["hints"], 10, "hints on a")
    assert queued > len(images)             # documents and chunks owed to c

    a.stop()
    a.start()
    assert reports(a.config)["a"]["hints"] == queued     # read back from LMDB
    c.start()
    wait_for(lambda: reports(a.config)["a"]["hints"] == 0, 30, "hints delivered")
    rc = reports(a.config)
    assert rc["a"]["hints_delivered"] == queued   # by the restarted process
    assert rc["a"]["bytes_repaired"] == 0 and rc["c"]["bytes_repaired"] == 0
    for image_id in images:
        wait_for(lambda i=image_id: c.image(i)[1].get("status") == "active", 10,
                 "record on c")
    wait_for(lambda: reports(a.config)["c"]["under_replicated"] == 0, 10,
             "c holds every chunk it owns")
    assert reports(a.config)["c"]["chunks"] > 0
    b.stop()                                  # c serves from its own copies and a's
    a.stop()
    for image_id, data in images.items():
        assert c.download(image_id) == (200, data)


async def test_hint_queue_is_bounded_and_read_back(replica_engine):
    from tessera.replication.updater import Hints

    engine = replica_engine
    hints = Hints(engine.replica.hints, ["b", "c"], limit=5)
    doc_ids = ["0b8e0f7c-3c55-4d6e-9d36-3a8c4f7f0a01", "0b8e0f7c-3c55-4d6e-9d36-3a8c4f7f0a02"]
    await hints.add_docs("b", doc_ids)
    await hints.add_chunks("b", [bytes([i]) * 32 for i in range(6)])
    assert len(hints.docs["b"]) == 2 and len(hints.chunks["b"]) == 3
    assert hints.overflowed == 3 and hints.backlog() == 5
    await hints.add_chunks("c", [b"\x09" * 32])
    again = Hints(engine.replica.hints, ["b", "c"], limit=5)     # as after a restart
    assert again.docs == {"b": set(doc_ids)}
    assert again.chunks == {"b": hints.chunks["b"], "c": {b"\x09" * 32}}
    await again.store.drop("b", "chunks", list(hints.chunks["b"]))
    assert Hints(engine.replica.hints, ["b"], limit=5).chunks == {}
