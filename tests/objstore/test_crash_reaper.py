# SIGKILL of the object tier's reaper (`tessera reap --grace 0`, offline) while it repacks and
# deletes pack objects. Image B shares its first 8 MiB with image A; A is deleted, so A's first
# pack is mostly dead (repacked: B's chunks are copied into a new pack, the old one deleted)
# and its last pack is wholly dead (deleted). The reaper is killed once a new pack object
# appears and once one of A's objects disappears; after each kill the store's index
# references only objects the bucket holds; a last complete pass leaves no garbage and none
# of A's packs, and B reads back whole from the object store.
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import trio

from tessera.engine.config import MiB

WATCH_LIMIT = 120.0             # a reaper pass that never reaches the event fails the test


def keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", ())}


def reap(server, kill_when=None) -> tuple[int, bool]:
    """Run `tessera reap --grace 0` on the stopped node's data; with `kill_when`, poll it
    (a predicate) and SIGKILL the reaper as soon as it holds. (exit status, killed)."""
    proc = subprocess.Popen([sys.executable, "-m", "tessera", "reap", "--grace", "0",
                             "--config", str(server.config), "--data-dir",
                             str(server.data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = False
    if kill_when is not None:
        deadline = time.monotonic() + WATCH_LIMIT
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_when():
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.003)
    out, err = proc.communicate(timeout=WATCH_LIMIT)
    assert killed or proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return proc.returncode, killed


def http(server, method: str, path: str, body: bytes | None = None, headers=None):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def upload(server, data: bytes) -> str:
    status, body = http(server, "POST", "/v2/images", json.dumps(
        {"disk_format": "raw", "container_format": "bare"}).encode(),
        {"Content-Type": "application/json"})
    assert status == 201, body
    image_id = json.loads(body)["id"]
    status, body = http(server, "PUT", f"/v2/images/{image_id}/file", data, {
        "Content-Type": "application/octet-stream", "X-Image-Meta-Store": "obj"})
    assert status == 204, body
    return image_id


async def read_back(s3_node, server, image_id: str, data: bytes) -> None:
    """Restart the node, evict its local copies, and read the image from the object store."""
    node = s3_node(base=server.data_dir.parent)
    try:
        assert http(node, "POST", "/v2/cache/prune")[0] == 200
        status, got = await trio.to_thread.run_sync(
            http, node, "GET", f"/v2/images/{image_id}/file")
        assert status == 200 and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    finally:
        node.stop()


async def test_kill_the_reaper_while_it_repacks_and_deletes(s3_node, s3, s3_bucket, s3_audit):
    server = s3_node()
    a = os.urandom(40 * MiB)
    b = a[:8 * MiB] + os.urandom(4 * MiB)
    a_id = await trio.to_thread.run_sync(upload, server, a)
    a_packs = keys(s3, s3_bucket)
    b_id = await trio.to_thread.run_sync(upload, server, b)
    assert http(server, "DELETE", f"/v2/images/{a_id}")[0] == 204
    server.stop()
    start = await s3_audit(server)
    assert set(start.images) == {b_id}
    first = keys(s3, s3_bucket)

    # 1. killed once a new (repacked) pack object is in the bucket
    _, killed = await trio.to_thread.run_sync(
        reap, server, lambda: bool(keys(s3, s3_bucket) - first))
    assert killed, "the reaper wrote no new pack object"
    await s3_audit(server)                             # no dangling reference

    # 2. killed once one of A's objects is gone (if the first pass had not got that far)
    await trio.to_thread.run_sync(reap, server, lambda: bool(a_packs - keys(s3, s3_bucket)))
    await s3_audit(server)

    # 3. a whole pass: no garbage; A's packs are gone, B lives in what the index knows
    code, _ = await trio.to_thread.run_sync(reap, server)
    assert code == 0
    end = await s3_audit(server)
    assert end.garbage == set(), end.garbage
    assert set(end.images) == {b_id}
    assert not a_packs & set(end.listed), "a pack of A is still there"
    await read_back(s3_node, server, b_id, b)
