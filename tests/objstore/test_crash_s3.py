# SIGKILL of a real node in the middle of uploads to its s3 store: half-way through the body,
# while its packs are being PUT, and at moments after the body ended (packs written, manifest
# maybe committing). After every kill the node restarts on the same data: an image is either
# not active (queued or saving: the upload is lost, as a client that saw no 204 must assume;
# nothing of it is committed in the store's index) or active with exactly
# its bytes read back from the object store; the store's index never references an object
# the bucket does not hold (garbage objects are allowed). An offline reaper pass with no grace
# then removes the garbage, and the bucket holds exactly the objects the index knows.
from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import trio

MiB = 1024 * 1024
SIZE = 40 * MiB                 # two packs of ~32 MiB (and a tail)
# after the body was sent: kill this many seconds later (seeded moments of the commit)
AFTER_BODY = (0.3,)
CLIENT_TIMEOUT = 60.0


def request(port: int, method: str, path: str, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def create_image(port: int) -> str:
    status, body = request(port, "POST", "/v2/images", json.dumps(
        {"disk_format": "raw", "container_format": "bare"}),
        {"Content-Type": "application/json"})
    assert status == 201, body
    return json.loads(body)["id"]


def upload_until_killed(server, image_id: str, data: bytes, kill) -> int | None:
    """PUT `data` to store obj in a thread; `kill(half_sent, all_sent)` (two events) runs
    meanwhile and kills the node. The upload's status if it answered before dying, else None."""
    half, sent = threading.Event(), threading.Event()
    result: list = []

    def body():
        for i in range(0, len(data), MiB):
            if i >= len(data) // 2:
                half.set()
            yield data[i:i + MiB]
        sent.set()

    def put() -> None:
        try:
            status, _ = request(server.port, "PUT", f"/v2/images/{image_id}/file", body(), {
                "Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                "X-Image-Meta-Store": "obj"})
            result.append(status)
        except (OSError, http.client.HTTPException):
            result.append(None)

    thread = threading.Thread(target=put)
    thread.start()
    kill(half, sent)
    thread.join(CLIENT_TIMEOUT)
    assert not thread.is_alive(), "the upload hung after the node was killed"
    return result[0]


def sigkill(server) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()


def objects(s3, bucket: str) -> int:
    return s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)


async def test_kill_mid_upload_leaves_no_dangling_reference(s3_node, s3, s3_bucket, s3_audit,
                                                            tmp_path):
    base = tmp_path / "node"
    server = s3_node(base=base)
    sent_images: dict[str, bytes] = {}
    verified: set[str] = set()               # active images already read back whole
    active: dict[str, bool] = {}
    kills: list[tuple[str, int | None]] = []

    def half_body(half, sent):
        half.wait(CLIENT_TIMEOUT)
        sigkill(server)

    def first_object(half, sent):            # a pack landed in the bucket
        before = objects(s3, s3_bucket)
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while objects(s3, s3_bucket) <= before and time.monotonic() < deadline:
            time.sleep(0.005)
        sigkill(server)

    def after_body(delay):
        def kill(half, sent):
            sent.wait(CLIENT_TIMEOUT)
            time.sleep(delay)
            sigkill(server)
        return kill

    plans = [("half the body", half_body), ("first pack object", first_object)]
    plans += [(f"{d:g} s after the body", after_body(d)) for d in AFTER_BODY]
    for seed, (what, kill) in enumerate(plans):
        data = hashlib.sha256(f"seed {seed}".encode()).digest() * (SIZE // 64)
        data = os.urandom(SIZE // 2) + data                  # half unique, half per seed
        image_id = create_image(server.port)
        sent_images[image_id] = data
        status = await trio.to_thread.run_sync(upload_until_killed, server, image_id, data,
                                               kill)
        kills.append((what, status))
        server = s3_node(base=base)
        # every image: not active, or active with exactly its bytes (from the object store)
        request(server.port, "POST", "/v2/cache/prune")
        for iid, sent_data in sent_images.items():
            st, body = request(server.port, "GET", f"/v2/images/{iid}")
            status_now = json.loads(body)["status"]
            # saving: the status a crash mid-upload leaves (as on a local store, and Glance)
            assert status_now in ("queued", "saving", "active"), (what, status_now)
            active[iid] = status_now == "active"
            if active[iid] and iid not in verified:
                verified.add(iid)
                st, got = request(server.port, "GET", f"/v2/images/{iid}/file")
                assert st == 200 and hashlib.sha256(got).digest() == \
                    hashlib.sha256(sent_data).digest(), what
        assert status != 204 or active[image_id], (what, "a 204 but not active")
    server.stop()
    # no dangling reference anywhere; the store holds manifests of the active images only
    before = await s3_audit(server)
    assert set(before.images) == {iid for iid, on in active.items() if on}

    # the garbage the kills left goes with one reaper pass (no grace); nothing else does
    run = subprocess.run([sys.executable, "-m", "tessera", "reap", "--grace", "0",
                          "--config", str(server.config), "--data-dir", str(server.data_dir)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    after = await s3_audit(server)
    assert after.garbage == set(), after.garbage
    assert after.images == before.images
    assert before.garbage, "no kill left an object behind: the kills missed the PUTs"
    assert [what for what, _ in kills] == [what for what, _ in plans]
