# A real three-node cluster on 127.0.0.1 (processes started as users start them): quorum
# uploads, reads from any node, metadata last-writer-wins, SIGKILL in the middle of uploads,
# anti-entropy after a restart, a wiped node rebuilt, and the peer port's refusals.
import hashlib
import json
import os
import shutil
import threading
import time


MiB = 1024 * 1024


def test_upload_on_a_download_on_c_identical_everywhere(cluster, cluster_status, wait_for):
    a, b, c = cluster
    data = os.urandom(5 * MiB) + bytes(256 * 1024) + os.urandom(MiB)
    image_id = a.create(name="base")
    assert a.upload(image_id, data) == 204
    # metadata reaches the other nodes right after the acknowledgement (pushed at once)
    wait_for(lambda: c.image(image_id)[1].get("status") == "active", 10, "record on c")
    code, got = c.download(image_id)
    assert code == 200 and got == data
    md5, sha512 = hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest()
    for n in cluster:
        status, img = wait_for(lambda n=n: (lambda r: r if r[1].get("status") == "active"
                                            else None)(n.image(image_id)), 10, "record")
        assert (img["checksum"], img["os_hash_value"], img["size"]) == (md5, sha512, len(data))
    # metadata changes travel too; the later write wins on every node
    patch = [{"op": "add", "path": "/color", "value": "blue"}]
    hdr = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
    assert b.request("PATCH", f"/v2/images/{image_id}", json.dumps(patch), hdr)[0] == 200
    wait_for(lambda: c.image(image_id)[1].get("color") == "blue", 10, "first patch on c")
    patch = [{"op": "replace", "path": "/color", "value": "red"}]
    assert c.request("PATCH", f"/v2/images/{image_id}", json.dumps(patch), hdr)[0] == 200
    for n in cluster:
        wait_for(lambda n=n: n.image(image_id)[1].get("color") == "red", 10, "patch on " + n.id)
    # a delete leaves a tombstone everywhere
    other = b.create(name="gone")
    wait_for(lambda: a.image(other)[0] == 200, 10, "create on a")
    assert a.request("DELETE", f"/v2/images/{other}")[0] == 204
    for n in cluster:
        wait_for(lambda n=n: n.image(other)[0] == 404, 10, "delete on " + n.id)
    # the public port has no peer routes; the peer port refuses unsigned requests
    for method in ("GET", "POST"):
        assert a.request(method, "/peer/v1/status")[0] == 404
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", a.peer_port, timeout=10)
    conn.request("POST", "/peer/v1/status", body=b"\x80")
    assert conn.getresponse().status == 401
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", a.peer_port, timeout=10)
    conn.request("GET", "/v2/images")
    assert conn.getresponse().status == 404
    conn.close()
    doc = wait_for(lambda: (lambda d: d if d["under_replicated"] == 0 else None)(
        cluster_status(a.config)), 30, "full replication")
    assert doc["up"] == 3 and doc["complete"]


def test_sigkill_restart_quorum_and_wiped_node(cluster, cluster_status, wait_for):
    a, b, c = cluster
    acked: dict[str, bytes] = {}
    failed = []

    def uploader(k):
        for i in range(4):
            data = os.urandom(MiB + 4096 * (k * 10 + i))
            image_id = a.create(name=f"u{k}-{i}")
            try:
                code = a.upload(image_id, data)
            except OSError:
                code = None
            (acked.__setitem__(image_id, data) if code == 204 else failed.append(code))

    threads = [threading.Thread(target=uploader, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    b.kill()                                     # SIGKILL in the middle of the uploads
    for t in threads:
        t.join()
    assert acked, f"no upload was acknowledged ({failed})"
    for image_id, data in acked.items():         # every acknowledged upload survives
        wait_for(lambda i=image_id: c.image(i)[1].get("status") == "active", 10, "record")
        for n in (a, c):
            assert n.download(image_id) == (200, data)
    # with one node down W=2 is still reachable; with two down the upload is refused
    c.kill()
    lonely = a.create(name="lonely")
    code, body = a.request("PUT", f"/v2/images/{lonely}/file", os.urandom(100_000),
                           {"Content-Type": "application/octet-stream"})
    assert code == 503 and b"write_quorum" in body
    assert a.image(lonely)[1]["status"] == "queued"
    c.start()
    b.start()
    doc = wait_for(lambda: (lambda d: d if d["complete"] and d["under_replicated"] == 0
                            and all(r["images"] == len(acked) + 1 for r in d["nodes"])
                            and len({r["chunks"] for r in d["nodes"]}) == 1 else None)(
        cluster_status(a.config)), 90, "anti-entropy after the restart")
    assert doc["down"] == 0
    # a wiped node is rebuilt by anti-entropy: afterwards it serves every image alone
    c.stop()
    shutil.rmtree(c.data_dir)
    c.start()
    wait_for(lambda: (lambda d: d if d["under_replicated"] == 0 and all(
        r.get("images") == len(acked) + 1 and r.get("chunks") == doc["nodes"][0]["chunks"]
        for r in d["nodes"]) else None)(cluster_status(a.config)), 90, "rebuild of the wiped node")
    a.stop()
    b.stop()
    for image_id, data in acked.items():
        assert c.download(image_id) == (200, data)


def test_corrupted_chunk_is_quarantined_and_repaired(tmp_path, cluster_factory, cluster_status,
                                                     wait_for):
    a, b, c = cluster_factory(tmp_path, extra="audit_rate = 1000000000\n", start=True)
    data = os.urandom(4 * MiB)
    image_id = a.create(name="victim")
    assert a.upload(image_id, data) == 204
    wait_for(lambda: (lambda d: d["under_replicated"] == 0 and all(
        r["images"] == 1 and r["chunks"] > 0 for r in d["nodes"]))(
        cluster_status(a.config)), 30, "replication")
    c.stop()
    segments = sorted((c.data_dir / "segments").iterdir())
    assert segments
    with open(segments[0], "r+b") as f:
        size = f.seek(0, 2)
        for k in range(1, 9):                   # a few bytes well inside payloads
            f.seek(size * k // 9)
            byte = f.read(1)
            f.seek(size * k // 9)
            f.write(bytes([byte[0] ^ 0xFF]))
    c.start()
    report = wait_for(lambda: (lambda r: r if r["quarantined"] >= 1
                               and r["audit_repaired"] == r["quarantined"]
                               and r["under_replicated"] == 0 else None)(
        next(r for r in cluster_status(a.config)["nodes"] if r["node"] == "c")),
        60, "quarantine and repair on c")
    assert report["quarantined"] >= 1
    a.stop()
    b.stop()                                     # c alone serves good bytes
    assert c.download(image_id) == (200, data)


def test_adding_and_removing_a_node_rebalances(tmp_path, cluster_factory, cluster_status,
                                               wait_for):
    nodes = cluster_factory(tmp_path, ids=("a", "b", "c", "d"), replicas=2, write_quorum=2,
                            interval=0.3)
    a, b, c, d = nodes
    block = (f'\n[[cluster.nodes]]\nid = "d"\napi = "127.0.0.1:{d.api_port}"\n'
             f'peer = "127.0.0.1:{d.peer_port}"\n')
    four = {n.id: n.config.read_text() for n in nodes}
    for n in (a, b, c):                                   # first a cluster of three
        n.config.write_text(four[n.id].replace(block, ""))

    def converged(members, want_images):
        def check():
            doc = cluster_status(a.config)
            rows = {r["node"]: r for r in doc["nodes"]}
            if not doc["complete"] or doc["under_replicated"] != 0:
                return None
            if any(r["images"] != want_images for r in rows.values()):
                return None
            distinct = rows["a"]["chunks"]                # a received every upload
            stored = sum(r["store_chunks"] for r in rows.values())
            return rows if stored == 2 * distinct and set(rows) == members else None
        return check

    for n in (a, b, c):
        n.start()
    blobs = {}
    for k in range(2):
        data = os.urandom(2 * MiB)
        image_id = a.create(name=f"r{k}")
        assert a.upload(image_id, data) == 204
        blobs[image_id] = data
    # a keeps `store` copies only of what it owns: the rest is demoted once owners hold it
    wait_for(converged({"a", "b", "c"}, 2), 60, "R=2 copies on three nodes")
    for n in (a, b, c):                               # add d: every node learns of it
        n.stop()
        n.config.write_text(four[n.id])
    for n in nodes:
        n.start()
    rows = wait_for(converged({"a", "b", "c", "d"}, 2), 90, "rebalance onto d")
    assert rows["d"]["store_chunks"] > 0
    for image_id, data in blobs.items():
        assert d.download(image_id) == (200, data)
    for n in nodes:                                   # remove d again
        n.stop()
    for n in (a, b, c):
        n.config.write_text(four[n.id].replace(block, ""))
        n.start()
    wait_for(converged({"a", "b", "c"}, 2), 90, "R copies restored without d")
    for image_id, data in blobs.items():
        for n in (a, b, c):
            assert n.download(image_id) == (200, data)
