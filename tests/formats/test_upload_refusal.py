# Format inspection on the upload path, end to end: through the engine facade (refusals
# leave the image queued, store nothing and reference nothing; accepted images get the
# header's virtual_size) and through HTTP on a real node (PUT /file answers 415 with
# Glance's messages, the image stays queued, a later good upload succeeds).
import http.client
import json

import pytest

from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.engine.errors import UnsupportedFormat

KiB, MiB = 1024, 1024 * 1024


@pytest.fixture
async def engine(tmp_path):
    eng = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False))
    yield eng
    await eng.aclose()


async def pieces(data, size=64 * KiB):
    for i in range(0, len(data), size):
        yield memoryview(data)[i:i + size]


async def upload(engine, disk_format, data, container="bare"):
    img = await engine.create_image({"disk_format": disk_format,
                                     "container_format": container}, owner="p1")
    return img.id, engine.upload(img.id, pieces(data), expected_size=len(data))


REFUSALS = [
    ("qcow2", lambda mk: mk.raw(), "Image disk_format qcow2 does not match stream data raw"),
    ("raw", lambda mk: mk.qcow2(8 * MiB),
     "Image disk_format raw does not match stream data qcow2"),
    ("qcow2", lambda mk: mk.qcow2(backing=True), "Image failed safety checks"),
    ("qcow2", lambda mk: mk.qcow2(incompatible=0b100), "Image failed safety checks"),
    ("vmdk", lambda mk: mk.vmdk(descriptor=mk.vmdk_descriptor(
        "monolithicFlat", extents=['RW 2048 FLAT "/etc/passwd" 0'])),
     "Image failed safety checks"),
    ("vmdk", lambda mk: mk.vmdk_descriptor(), "Image failed safety checks"),
    ("raw", lambda mk: mk.qed(), "Image failed safety checks"),
    ("iso", lambda mk: mk.iso(40, system_area=mk.qcow2(length=4096)),
     "Image failed safety checks"),
    ("vhd", lambda mk: mk.vhdx(), "Image disk_format vhd does not match stream data vhdx"),
]


@pytest.mark.parametrize("declared,build,message", REFUSALS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSALS)])
async def test_refusal_leaves_image_queued_and_stores_nothing(engine, mk, declared, build,
                                                              message):
    before = engine.stats()
    image_id, call = await upload(engine, declared, build(mk))
    with pytest.raises(UnsupportedFormat) as info:
        await call
    assert info.value.message == message
    rec = engine.get_image(image_id)
    assert (rec.status, rec.size, rec.virtual_size, rec.checksum, rec.stores) == \
        ("queued", None, None, None, ())
    after = engine.stats()
    assert (after["stored_bytes"], after["chunks"], after["logical_bytes"]) == \
        (before["stored_bytes"], before["chunks"], before["logical_bytes"])


ACCEPTED = [
    ("qcow2", "bare", lambda mk: mk.qcow2(8 * MiB), 8 * MiB),
    ("vmdk", "bare", lambda mk: mk.vmdk(4096, stream=True), 4096 * 512),
    ("vhdx", "bare", lambda mk: mk.vhdx(64 * MiB), 64 * MiB),
    ("vdi", "bare", lambda mk: mk.vdi(10 * MiB), 10 * MiB),
    ("vhd", "bare", lambda mk: mk.vhd_dynamic(10 * MiB), 10 * MiB),
    ("iso", "bare", lambda mk: mk.iso(40, system_area=mk.mbr(length=512)), 40 * 2048),
    ("raw", "bare", lambda mk: mk.gpt(), 64 * KiB),
    ("raw", "bare", lambda mk: mk.iso(50), 50 * 2048),
    ("ami", "ami", lambda mk: mk.raw(), 256 * KiB),
    ("qcow2", "ovf", lambda mk: mk.raw(), None),
]


@pytest.mark.parametrize("declared,container,build,vsize", ACCEPTED,
                         ids=[f"{a[0]}-{a[1]}-{i}" for i, a in enumerate(ACCEPTED)])
async def test_accepted_upload_records_virtual_size(engine, mk, declared, container, build,
                                                    vsize):
    data = build(mk)
    _, call = await upload(engine, declared, data, container)
    rec = await call
    assert (rec.status, rec.size, rec.virtual_size) == ("active", len(data), vsize)


async def test_refused_image_accepts_a_good_upload_later(engine, mk):
    image_id, call = await upload(engine, "qcow2", mk.qcow2(backing=True))
    with pytest.raises(UnsupportedFormat):
        await call
    good = mk.qcow2(3 * MiB)
    rec = await engine.upload(image_id, pieces(good, 1000), expected_size=len(good))
    assert (rec.status, rec.virtual_size, rec.size) == ("active", 3 * MiB, len(good))


# -- over HTTP, on a real node ----------------------------------------------------------------

def call(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def create(server, disk_format):
    status, body = call(server, "POST", "/v2/images",
                        json.dumps({"name": "x", "disk_format": disk_format,
                                    "container_format": "bare"}),
                        {"Content-Type": "application/json"})
    assert status == 201
    return json.loads(body)["id"]


def put(server, image_id, data):
    return call(server, "PUT", f"/v2/images/{image_id}/file", data,
                {"Content-Type": "application/octet-stream", "Accept": "application/json"})


def show(server, image_id):
    status, body = call(server, "GET", f"/v2/images/{image_id}",
                        headers={"Accept": "application/json"})
    assert status == 200
    return json.loads(body)


async def test_http_put_refused_with_415_and_nothing_stored(tessera_server, mk):
    server = tessera_server
    raw_declared = create(server, "raw")
    status, body = put(server, raw_declared, mk.qcow2(8 * MiB))
    assert status == 415
    assert "Image disk_format raw does not match stream data qcow2" in \
        json.loads(body)["message"]
    unsafe = create(server, "qcow2")
    status, body = put(server, unsafe, mk.qcow2(backing=True))
    assert status == 415
    assert "Image failed safety checks" in json.loads(body)["message"]
    for image_id in (raw_declared, unsafe):
        shown = show(server, image_id)
        assert (shown["status"], shown["size"], shown["virtual_size"]) == ("queued", None, None)

    assert server.stop() == 0
    eng = await Engine.open(EngineConfig(data_dir=server.data_dir))
    try:
        stats = eng.stats()
        assert (stats["stored_bytes"], stats["chunks"], stats["logical_bytes"]) == (0, 0, 0)
        assert {eng.get_image(i).status for i in (raw_declared, unsafe)} == {"queued"}
    finally:
        await eng.aclose()


def test_http_good_upload_after_refusal(tessera_server, mk):
    server = tessera_server
    image_id = create(server, "qcow2")
    assert put(server, image_id, mk.raw())[0] == 415
    status, _ = put(server, image_id, mk.qcow2(5 * MiB))
    assert status == 204
    shown = show(server, image_id)
    assert (shown["status"], shown["virtual_size"]) == ("active", 5 * MiB)
    status, body = call(server, "GET", f"/v2/images/{image_id}/file")
    assert status == 200 and body == mk.qcow2(5 * MiB)
