# The time and size caps of web-download's request safety on the locations path: a
# registration against an origin that stalls mid-body (read cap) or drips (whole-transfer
# cap), or whose content is over image_size_cap (announced or discovered in flight), fails
# its location_import task and leaves the image queued without its location and with no
# chunk kept (the legacy PATCH, which reads before answering, answers 400); a cold pull from an origin that stalls mid-body ends cleanly (an error status
# or a cut body, never a hang), and a later pull once the origin behaves is byte-identical.
# The only clock assertions are generous trio.fail_after guards.
from __future__ import annotations

import os

import trio

from tessera.engine.errors import Unavailable
from tessera.http.config import ServerConfig
from tessera.http.server import serve

CAP = 300_000
GUARD = 15                      # seconds: far above every timeout configured here


async def failed_registration(node, origin, loc, name: str, data: bytes) -> tuple[dict, dict]:
    """Register `data` at `name` expecting the task to fail; (image JSON, task JSON)."""
    with trio.fail_after(GUARD):
        img = await loc.register(node, origin, name, data)
    tasks = (await node.get(f"/v2/images/{img['id']}/tasks")).json()["tasks"]
    assert [(t["type"], t["status"]) for t in tasks] == [("location_import", "failure")]
    return img, tasks[0]


async def assert_reverted(node, img: dict) -> None:
    """The documented end of a failed registration: queued, no location, no hashes, no
    import lock, no chunk referenced or kept in the cache tier."""
    assert img["status"] == "queued"
    for name in ("size", "checksum", "os_hash_value", "virtual_size"):
        assert img[name] is None, name
    assert "os_glance_import_task" not in img
    assert (await node.get(f"/v2/images/{img['id']}/locations")).json() == []
    assert node.engine.chunks.image_chunks(img["id"]) == []
    assert node.engine.chunks.stats()["cache_bytes"] == 0


async def hung_up(origin, count: int) -> None:
    """Wait until the origin saw `count` stalled connections closed by the node."""
    with trio.fail_after(GUARD):
        while origin.hung_up < count:
            await trio.sleep(0.01)


async def assert_healthy(node, origin, loc) -> None:
    """The node still answers and a well-behaved registration still works."""
    assert (await node.get("/healthcheck")).status == 200
    origin.stall_after, origin.no_length = None, False
    data = os.urandom(120_000)
    with trio.fail_after(GUARD):
        img = await loc.register(node, origin, "healthy.raw", data)
    assert img["status"] == "active"
    assert (await node.get(f"/v2/images/{img['id']}/file")).body == data


async def test_registration_from_a_stalled_origin_fails_on_the_read_cap(make_node, origin, loc):
    node = await make_node(imports=loc.allow(origin, read_timeout=0.3))
    origin.stall_after = 200_000
    img, task = await failed_registration(node, origin, loc, "stall.raw", os.urandom(900_000))
    assert "no data for 0.3 s" in task["message"]
    await assert_reverted(node, img)
    await hung_up(origin, 1)                    # the stalled connection was closed
    await assert_healthy(node, origin, loc)


async def test_registration_from_a_dripping_origin_fails_on_the_transfer_cap(make_node, origin,
                                                                              loc):
    node = await make_node(imports=loc.allow(origin, read_timeout=5.0, download_timeout=0.5))
    origin.stall_after, origin.drip = 50_000, 0.02          # never idle for read_timeout
    img, task = await failed_registration(node, origin, loc, "drip.raw", os.urandom(200_000))
    assert "longer than 0.5 s" in task["message"] or \
        "read or transfer time cap" in task["message"], task["message"]
    await assert_reverted(node, img)
    await hung_up(origin, 1)
    await assert_healthy(node, origin, loc)


async def test_registration_over_the_size_cap(make_node, origin, loc):
    node = await make_node(imports=loc.allow(origin), image_size_cap=CAP)
    for no_length in (False, True):             # announced, then discovered in flight
        origin.no_length = no_length
        img, task = await failed_registration(node, origin, loc, f"big-{no_length}.raw",
                                              os.urandom(CAP + 200_000))
        assert f"size cap of {CAP} bytes" in task["message"], task["message"]
        await assert_reverted(node, img)
    # exactly the cap is accepted, with or without a Content-Length
    data = os.urandom(CAP)
    img = await loc.register(node, origin, "exact.raw", data)
    assert img["status"] == "active" and img["size"] == CAP
    assert (await node.get(f"/v2/images/{img['id']}/file")).body == data


async def test_legacy_patch_from_a_stalled_origin_answers_400(make_node, origin, loc):
    node = await make_node(imports=loc.allow(origin, read_timeout=0.3),
                           server=ServerConfig(show_multiple_locations=True))
    origin.stall_after = 100_000
    origin.files["p.raw"] = os.urandom(400_000)
    img = await node.create()
    with trio.fail_after(GUARD):
        r = await node.patch(f"/v2/images/{img['id']}", [
            {"op": "add", "path": "/locations/-",
             "value": {"url": origin.url("p.raw"), "metadata": {}}}])
    assert r.status == 400 and "no data for 0.3 s" in r.json()["message"], r.body
    await assert_reverted(node, (await node.get(f"/v2/images/{img['id']}")).json())
    await hung_up(origin, 1)


async def raw_pull(port: int, image_id: str) -> tuple[int, int | None, bytes]:
    """GET the image's file over a real socket and read until the server closes the
    connection; (status, Content-Length, body bytes received)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(f"GET /v2/images/{image_id}/file HTTP/1.1\r\n"
                              f"Host: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while True:
            try:
                piece = await stream.receive_some(1 << 20)
            except trio.BrokenResourceError:
                break
            if not piece:
                break
            buf += piece
    finally:
        await stream.aclose()
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    length = headers.get("content-length")
    return int(lines[0].split()[1]), None if length is None else int(length), body


async def test_cold_pull_from_a_stalled_origin_ends_cleanly(make_node, origin, loc, nursery):
    node = await make_node(imports=loc.allow(origin, read_timeout=0.3))
    data = os.urandom(12_000_000)
    img = await loc.register(node, origin, "cold.raw", data)
    assert img["status"] == "active"
    assert await loc.evict(node) > 0
    port = (await nursery.start(lambda task_status: serve(
        node.app, ServerConfig(host="127.0.0.1", port=0), task_status=task_status)))[1]
    origin.stall_after = 8_000_000              # past the first read-ahead window
    # in process: a clear error status before the body, or Unavailable while it streams
    with trio.fail_after(GUARD):
        try:
            r = await node.get(f"/v2/images/{img['id']}/file")
        except Unavailable:
            pass
        else:
            assert r.status == 503, (r.status, len(r.body))
    # over a socket: the same, seen by a client as an error status or a cut body
    await loc.evict(node)
    with trio.fail_after(GUARD):
        status, length, body = await raw_pull(port, img["id"])
    if status == 200:
        assert length == len(data) and len(body) < len(data)
        assert data.startswith(body)            # what did leave was the image's bytes
    else:
        assert status == 503, status
    await hung_up(origin, 2)
    # a stall is not a content change: the image stays active and unmarked
    shown = (await node.get(f"/v2/images/{img['id']}")).json()
    assert shown["status"] == "active" and "os_glance_origin_changed" not in shown
    assert (await node.get("/healthcheck")).status == 200
    # once the origin behaves, both paths serve the image byte-identical
    origin.stall_after = None
    with trio.fail_after(GUARD):
        assert (await node.get(f"/v2/images/{img['id']}/file")).body == data
        await loc.evict(node)
        assert await raw_pull(port, img["id"]) == (200, len(data), data)
