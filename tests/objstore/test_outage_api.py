# Object-store outages seen through the API of a real node (a subprocess) whose store "obj"
# is an s3 store on the test's radosgw bucket: radosgw killed (connections refused) or frozen
# (SIGSTOP: connections hang) during a download and during an upload. The API answers 503
# with a message naming the object store, never hangs, leaves nothing dangling (the image
# stays queued, the store's index references only objects the bucket holds), and the same
# request succeeds once radosgw is back; a short outage while an upload's packs are written
# is ridden out by the retries.
from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time

import pytest
import trio

MiB = 1024 * 1024
# short bounds so an outage turns into a 503 quickly (connect, read, retry budget in seconds)
BOUNDS = {"connect_timeout": 1.0, "read_timeout": 2.0, "retry_time": 1.0}
CLIENT_TIMEOUT = 60.0           # a stalled response fails the test instead of hanging it


def request(server, method: str, path: str, body=None, headers=None,
            ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def create_image(server) -> str:
    status, _, body = request(server, "POST", "/v2/images", json.dumps(
        {"disk_format": "raw", "container_format": "bare"}),
        {"Content-Type": "application/json"})
    assert status == 201, body
    return json.loads(body)["id"]


def image(server, image_id: str) -> dict:
    status, _, body = request(server, "GET", f"/v2/images/{image_id}")
    assert status == 200, body
    return json.loads(body)


def put_file(server, image_id: str, body, length: int, store: str = "obj"):
    return request(server, "PUT", f"/v2/images/{image_id}/file", body, {
        "Content-Type": "application/octet-stream", "Content-Length": str(length),
        "X-Image-Meta-Store": store})


def evict(server) -> None:
    """Prune the node's caches with a zero budget: the s3 store's local copies go."""
    status, _, body = request(server, "POST", "/v2/cache/prune")
    assert status == 200, body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def uploaded(server, data: bytes) -> str:
    image_id = create_image(server)
    status, _, body = await trio.to_thread.run_sync(put_file, server, image_id, data, len(data))
    assert status == 204, body
    rec = image(server, image_id)
    assert rec["status"] == "active" and "obj" in rec["stores"]
    return image_id


def assert_clear_503(status: int, body: bytes) -> None:
    assert status == 503, (status, body[:500])
    assert b"object store http://127.0.0.1:" in body and b"is unavailable" in body, body


@pytest.mark.parametrize("outage", ["killed", "frozen"])
async def test_download_during_an_outage_is_503_then_works(s3_node, ceph, outage):
    server = s3_node(**BOUNDS)
    data = os.urandom(5 * MiB) + bytes(MiB)
    image_id = await uploaded(server, data)
    evict(server)
    ceph.kill_rgw() if outage == "killed" else ceph.pause_rgw()
    try:
        status, _, body = await trio.to_thread.run_sync(
            request, server, "GET", f"/v2/images/{image_id}/file")
    finally:
        await trio.to_thread.run_sync(ceph.ensure_rgw)
    assert_clear_503(status, body)
    assert image(server, image_id)["status"] == "active"      # an outage changes nothing
    status, _, body = await trio.to_thread.run_sync(
        request, server, "GET", f"/v2/images/{image_id}/file")
    assert status == 200 and sha(body) == sha(data)


async def test_outage_in_the_middle_of_a_download_ends_it_cleanly(s3_node, ceph):
    """radosgw dies while the body streams: the response ends early (never stalls, never
    wrong bytes) and a later download is whole."""
    server = s3_node(**BOUNDS)
    data = os.urandom(40 * MiB)
    image_id = await uploaded(server, data)
    evict(server)

    def read_with_outage() -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
        try:
            conn.request("GET", f"/v2/images/{image_id}/file")
            resp = conn.getresponse()
            assert resp.status == 200
            got = resp.read(MiB)
            ceph.kill_rgw()
            try:
                while piece := resp.read(MiB):
                    got += piece
            except (http.client.IncompleteRead, ConnectionError) as exc:
                got += getattr(exc, "partial", b"")
            return got
        finally:
            conn.close()

    try:
        got = await trio.to_thread.run_sync(read_with_outage)
    finally:
        await trio.to_thread.run_sync(ceph.ensure_rgw)
    assert len(got) >= MiB and got == data[:len(got)]          # a prefix, never wrong bytes
    status, _, body = await trio.to_thread.run_sync(
        request, server, "GET", f"/v2/images/{image_id}/file")
    assert status == 200 and sha(body) == sha(data)


@pytest.mark.parametrize("outage", ["killed", "frozen"])
async def test_upload_during_an_outage_is_503_and_leaves_nothing(s3_node, ceph, s3_audit,
                                                                  outage):
    """radosgw goes away half-way through the body: the upload answers 503 once the packs
    cannot be written, the image stays queued, no manifest or mapping was committed; the
    same upload succeeds once radosgw is back."""
    server = s3_node(**BOUNDS)
    data = os.urandom(12 * MiB)
    image_id = create_image(server)

    def body():
        yield data[:6 * MiB]
        ceph.kill_rgw() if outage == "killed" else ceph.pause_rgw()
        yield data[6 * MiB:]

    try:
        status, _, answer = await trio.to_thread.run_sync(put_file, server, image_id, body(),
                                                          len(data))
    finally:
        await trio.to_thread.run_sync(ceph.ensure_rgw)
    assert_clear_503(status, answer)
    rec = image(server, image_id)
    assert rec["status"] == "queued" and "obj" not in rec.get("stores", "")
    server.stop()
    audit = await s3_audit(server)
    assert audit.images == {}                          # nothing committed, nothing dangles
    if outage == "frozen":
        return                                         # the retry later: once is enough

    server = s3_node(base=server.data_dir.parent, **BOUNDS)
    status, _, answer = await trio.to_thread.run_sync(put_file, server, image_id, data,
                                                      len(data))
    assert status == 204, answer
    evict(server)
    status, _, got = await trio.to_thread.run_sync(
        request, server, "GET", f"/v2/images/{image_id}/file")
    assert status == 200 and sha(got) == sha(data)
    server.stop()
    audit = await s3_audit(server)
    assert image_id in audit.images


async def test_object_store_refusing_our_keys_is_503_at_once(s3_node, s3_endpoint, tmp_path):
    """Wrong credentials: 503 naming the object store and the credentials, not retried for
    the whole retry budget (the budget here is far longer than the test may take)."""
    base = tmp_path / "wrong-keys"
    base.mkdir()
    (base / "credentials").write_text(f"[default]\naws_access_key_id = {s3_endpoint.access_key}"
                                      "\naws_secret_access_key = wrong\n")
    server = s3_node(base=base, connect_timeout=1.0, read_timeout=2.0, retry_time=3600.0)
    image_id = create_image(server)
    status, _, body = await trio.to_thread.run_sync(put_file, server, image_id,
                                                    os.urandom(MiB), MiB)
    assert status == 503, body
    assert b"refused access (403" in body and b"credentials" in body
    assert image(server, image_id)["status"] == "queued"


async def test_short_outage_while_packs_are_written_is_ridden_out(s3_node, ceph, s3,
                                                                   s3_bucket, s3_audit):
    """radosgw dies once the first pack object landed and is back a moment later: the
    upload's retries carry it through (204, active, exact bytes, nothing dangling)."""
    server = s3_node(connect_timeout=1.0, read_timeout=5.0, retry_time=60.0)
    data = os.urandom(40 * MiB)                        # two packs and a tail
    image_id = create_image(server)
    landed = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while not s3.list_objects_v2(Bucket=s3_bucket).get("KeyCount"):
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        ceph.kill_rgw()
        landed.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    async def restart_soon() -> None:
        await trio.to_thread.run_sync(landed.wait, CLIENT_TIMEOUT)
        await trio.sleep(0.5)
        await trio.to_thread.run_sync(ceph.start_rgw)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(restart_soon)
        status, _, body = await trio.to_thread.run_sync(put_file, server, image_id, data,
                                                        len(data))
    assert landed.is_set()
    assert status == 204, body
    assert "retry" in server.log()                     # it did meet the outage
    evict(server)
    status, _, got = await trio.to_thread.run_sync(
        request, server, "GET", f"/v2/images/{image_id}/file")
    assert status == 200 and sha(got) == sha(data)
    server.stop()
    assert image_id in (await s3_audit(server)).images
