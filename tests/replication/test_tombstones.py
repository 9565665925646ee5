# Tombstone reclamation on a real three-node cluster (processes on 127.0.0.1, a 1 s grace):
# a delete's tombstone outlives the grace while a node is down (that node has not got it),
# is reclaimed on every node once all have it, and a node restarted from data older than
# the reclaimed tombstone (a restored backup) drops the image instead of reviving it; a
# wiped node still rebuilds every live image, old stamps included.
import os
import shutil

MiB = 1024 * 1024


def test_tombstones_reclaimed_once_every_node_has_them_never_revived(
        tmp_path, cluster_factory, cluster_reports, wait_for):
    reports = cluster_reports

    def _everywhere(nodes, predicate, what, timeout=30.0):
        wait_for(lambda: all(predicate(r) for r in reports(nodes[0].config).values()
                             if r.get("up")), timeout, what)

    nodes = cluster_factory(tmp_path, interval=0.3, extra="tombstone_grace = 1.0\n",
                            start=True)
    a, b, c = nodes
    keep_data, gone_data = os.urandom(MiB + 123), os.urandom(2 * MiB + 7)
    keep = a.create(name="keep")
    assert a.upload(keep, keep_data) == 204
    gone = a.create(name="gone")
    assert a.upload(gone, gone_data) == 204
    for n in nodes:
        wait_for(lambda n=n: n.image(gone)[1].get("status") == "active", 10, "gone active")

    c.stop()
    backup = tmp_path / "c-backup"            # c's data while `gone` was still live
    shutil.copytree(c.data_dir, backup)
    assert a.request("DELETE", f"/v2/images/{gone}")[0] == 204
    wait_for(lambda: b.image(gone)[0] == 404, 10, "delete on b")
    # past the grace a and b hold the tombstone back: c has not got it yet
    wait_for(lambda: all(r.get("tombstones_waiting") == 1 for r in
                         reports(a.config).values() if r.get("up")), 20, "grace passed")
    up = {k: r for k, r in reports(a.config).items() if r.get("up")}
    assert set(up) == {"a", "b"}
    assert all(r["tombstones"] == 1 and r["tombstones_reclaimed"] == 0 for r in up.values())

    c.start()                                 # c learns the delete, then all reclaim
    _everywhere(nodes, lambda r: r["tombstones"] == 0 and r["images"] == 1
                and r["reclaim_horizon"] > 0, "tombstone reclaimed on every node")
    assert {r["node"] for r in reports(a.config).values() if r.get("up")} == {"a", "b", "c"}
    for n in nodes:
        assert n.image(gone)[0] == 404
    assert c.download(keep) == (200, keep_data)

    # c restarted from its backup: it holds `gone` live, with a stamp below the
    # watermark of the peers that reclaimed its tombstone; it drops it, nobody revives it
    c.stop()
    shutil.rmtree(c.data_dir)
    shutil.copytree(backup, c.data_dir)
    c.start()
    wait_for(lambda: reports(a.config)["c"].get("stale_dropped", 0) >= 1, 20,
             "c drops the dead version")
    _everywhere(nodes, lambda r: r["images"] == 1 and r["tombstones"] == 0
                and r["under_replicated"] == 0, "one image on every node")
    for n in nodes:
        assert n.image(gone)[0] == 404
        assert n.image(keep)[1].get("status") == "active"

    # a wiped node rebuilds every live image, stamps far below the others' watermarks
    b.stop()
    shutil.rmtree(b.data_dir)
    b.start()
    wait_for(lambda: b.image(keep)[1].get("status") == "active", 20, "keep on wiped b")
    assert b.download(keep) == (200, keep_data)
    assert b.image(gone)[0] == 404


async def test_reclaim_raises_the_watermark_and_older_versions_are_refused(replica_engine):
    from tessera.replication.hlc import HybridClock

    engine = replica_engine
    rep = engine.replica
    rep.install(HybridClock(0), lambda image_id, stamp: None)
    rec = await engine.create_image({"name": "x", "disk_format": "raw",
                                     "container_format": "bare"}, owner="p")
    live = rep.export_doc(rec.id)
    await engine.delete_image(rec.id)
    found = rep.tombstones()
    assert found == [(rec.id, rep.stamp_of(rec.id))]
    assert rep.tombstones(before=found[0][1]) == []          # not older than itself
    assert await rep.reclaim(found) == 1
    assert rep.horizon() == found[0][1] and rep.tombstones() == []
    assert rep.export_doc(rec.id) is None and rep.stamp_of(rec.id) == 0
    assert await rep.apply_doc(live) is False                 # older than the tombstone
    assert rep.export_doc(rec.id) is None
    later = dict(live, stamp=rep.horizon() + 1)               # a later write still wins
    assert await rep.apply_doc(later) is True
    assert engine.get_image(rec.id).name == "x"
    assert await rep.drop_stale([(rec.id, later["stamp"])]) == 1
    assert rep.export_doc(rec.id) is None
