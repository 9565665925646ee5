# The reaper in a cluster (real processes on 127.0.0.1; reaper grace 0.5 s, a reap every
# 0.1 s, anti-entropy every hour so nothing repairs behind the reaper's back):
# - copies streamed to the other owners early in an upload that lasts longer than the
#   grace are still there when the image is active (the write confirms every copy at the
#   end, which restarts their grace until the document references them);
# - a chunk two images share survives the delete of one on every node, and is reclaimed on
#   every node once no image references it.
import http.client
import os
import time

MiB = 1024 * 1024


def _slow_upload(node, image_id, data, pieces=30, pause=0.1) -> int:
    """PUT /file in chunked pieces with a pause between them (the upload lasts longer
    than the reaper grace)."""
    step = -(-len(data) // pieces)

    def body():
        for i in range(0, len(data), step):
            yield data[i:i + step]
            time.sleep(pause)

    conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=60)
    try:
        conn.request("PUT", f"/v2/images/{image_id}/file", body=body(),
                     headers={"Content-Type": "application/octet-stream"},
                     encode_chunked=True)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_reaper_keeps_referenced_and_streamed_chunks_reclaims_the_rest(
        tmp_path, cluster_factory, cluster_reports, wait_for):
    nodes = cluster_factory(tmp_path, interval=3600.0, start=True,
                            engine="reaper_grace = 0.5\nreap_interval = 0.1\n")
    a, b, c = nodes
    reports = lambda: cluster_reports(a.config)      # noqa: E731
    data = os.urandom(6 * MiB)
    slow = a.create(name="slow")
    assert _slow_upload(a, slow, data) == 204
    for n in (b, c):
        wait_for(lambda n=n: n.image(slow)[1].get("status") == "active", 10,
                 "record on " + n.id)
    time.sleep(1.5)                # past the grace: a wrongly reaped copy would be gone
    r = reports()
    assert all(r[n]["under_replicated"] == 0 for n in "abc"), r
    held = {n: r[n]["chunks"] for n in "abc"}
    assert min(held.values()) > 0 and len(set(held.values())) == 1

    twin = b.create(name="twin")              # the same bytes: the same chunks
    assert b.upload(twin, data) == 204
    for n in nodes:
        wait_for(lambda n=n: n.image(twin)[1].get("status") == "active", 10, "twin")
    assert a.request("DELETE", f"/v2/images/{slow}")[0] == 204
    for n in nodes:
        wait_for(lambda n=n: n.image(slow)[0] == 404, 10, "delete on " + n.id)
    time.sleep(1.5)                # past the grace: twin still references every chunk
    r = reports()
    assert {n: r[n]["chunks"] for n in "abc"} == held
    assert c.download(twin) == (200, data)

    assert c.request("DELETE", f"/v2/images/{twin}")[0] == 204
    wait_for(lambda: all(x["chunks"] == 0 for x in reports().values()), 20,
             "every chunk reclaimed on every node")
