# Imports take the write quorum as uploads do (real processes on 127.0.0.1, anti-entropy
# every hour so only the write path can place copies): a glance-direct import on a node
# that reaches fewer than W owners fails with a clear message and the image is not active;
# with the cluster whole, an imported image's chunks are on every owner when it is active.
import json
import os

MiB = 1024 * 1024
OCTET = {"Content-Type": "application/octet-stream"}
JSON = {"Content-Type": "application/json"}
GD = json.dumps({"method": {"name": "glance-direct"}})


def _import(node, data):
    image_id = node.create(name="imported")
    assert node.request("PUT", f"/v2/images/{image_id}/stage", data, OCTET)[0] == 204
    assert node.request("POST", f"/v2/images/{image_id}/import", GD, JSON)[0] == 202
    return image_id


def _task(node, image_id):
    status, body = node.request("GET", f"/v2/images/{image_id}/tasks")
    tasks = json.loads(body)["tasks"] if status == 200 else []
    return tasks[0] if tasks and tasks[0]["status"] in ("success", "failure") else None


def test_import_needs_the_write_quorum_and_replicates(tmp_path, cluster_factory,
                                                      cluster_reports, wait_for):
    nodes = cluster_factory(tmp_path, interval=3600.0, start=True)
    a, b, c = nodes
    b.stop()
    c.stop()
    lonely = _import(a, os.urandom(MiB + 5))
    task = wait_for(lambda: _task(a, lonely), 30, "the import task to end")
    assert task["status"] == "failure"
    assert "Not enough replicas" in task["message"]
    assert "write_quorum=2" in task["message"]
    img = a.image(lonely)[1]
    assert img["status"] == "queued" and img["os_glance_failed_import"] == "default"
    assert a.download(lonely)[0] == 204          # no data: queued

    b.start()
    c.start()
    data = os.urandom(3 * MiB + 11)
    image_id = _import(a, data)
    task = wait_for(lambda: _task(a, image_id), 30, "the import task to end")
    assert task["status"] == "success", task
    assert a.image(image_id)[1]["status"] == "active"
    for n in (b, c):
        wait_for(lambda n=n: n.image(image_id)[1].get("status") == "active", 10,
                 "record on " + n.id)
    reports = cluster_reports(a.config)
    assert all(reports[n]["under_replicated"] == 0 and reports[n]["chunks"] > 0
               for n in ("b", "c"))
    assert all(reports[n]["bytes_repaired"] == 0 for n in reports)
    a.stop()
    assert c.download(image_id) == (200, data)
    assert b.download(image_id) == (200, data)
