# Image data: upload, byte-identical download, single ranges (206/416/400), 204 without data,
# 409 re-upload, 415 wrong content type, 413 over image_size_cap, the deactivated 403.
import hashlib
import os

import pytest

OCTET = {"Content-Type": "application/octet-stream"}
DATA = os.urandom(300_000) + bytes(200_000) + os.urandom(77_777)


@pytest.fixture
async def active(api):
    img = await api.create(name="data")
    r = await api.upload(img["id"], DATA)
    assert r.status == 204 and r.body == b""
    assert r.header("Content-Type") == "text/html; charset=UTF-8"
    return img["id"]


async def test_upload_sets_hashes_and_download_is_identical(api, active):
    rec = (await api.get(f"/v2/images/{active}")).json()
    assert rec["status"] == "active" and rec["size"] == len(DATA)
    assert rec["checksum"] == hashlib.md5(DATA).hexdigest()
    assert rec["os_hash_algo"] == "sha512"
    assert rec["os_hash_value"] == hashlib.sha512(DATA).hexdigest()
    r = await api.get(f"/v2/images/{active}/file", headers={"Accept": None})
    assert r.status == 200 and r.body == DATA
    assert r.header("Content-Type") == "application/octet-stream"
    assert r.header("Content-MD5") == rec["checksum"]
    assert r.header("Content-Range") is None


async def test_chunked_upload(api):
    img = await api.create(name="chunked")
    r = await api.put(f"/v2/images/{img['id']}/file", DATA, headers=OCTET, chunked=True)
    assert r.status == 204
    assert (await api.get(f"/v2/images/{img['id']}/file")).body == DATA


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-99", 0, 100),
    ("bytes=-10", len(DATA) - 10, len(DATA)),
    ("bytes=577000-", 577000, len(DATA)),
    ("bytes=10-99999999", 10, len(DATA)),           # end clamped
    ("bytes=-99999999", 0, len(DATA)),              # suffix longer than the image
    ("bytes=299990-300010", 299990, 300011),        # across the zero run
])
async def test_ranges(api, active, header, start, end):
    r = await api.get(f"/v2/images/{active}/file", headers={"Range": header})
    assert r.status == 206
    assert r.body == DATA[start:end]
    assert r.header("Content-Range") == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert r.header("Content-MD5") == hashlib.md5(DATA).hexdigest()


async def test_legacy_content_range_request_header(api, active):
    r = await api.get(f"/v2/images/{active}/file", headers={"Content-Range": "bytes 5-9/*"})
    assert r.status == 206 and r.body == DATA[5:10]


async def test_unsatisfiable_and_multiple_ranges(api, active):
    r = await api.get(f"/v2/images/{active}/file",
                      headers={"Range": f"bytes={len(DATA) + 10}-", "Accept": None})
    assert r.status == 416
    assert r.header("Content-Type") == "text/plain; charset=UTF-8"
    assert r.body.decode() == (
        "416 Request Range Not Satisfiable\n\nThe Range requested is not available.\n\n "
        "Invalid start position in Range header. Start position MUST be in the inclusive "
        f"range [0, {len(DATA) - 1}].  ")
    r = await api.get(f"/v2/images/{active}/file", headers={"Range": "bytes=5-2"})
    assert r.status == 416
    r = await api.get(f"/v2/images/{active}/file", headers={"Range": "pages=1-2"})
    assert r.status == 416
    r = await api.get(f"/v2/images/{active}/file", headers={"Range": "bytes=0-1,5-6"})
    assert r.status == 400
    assert r.json()["message"].startswith(
        "Requests with multiple ranges are not supported in Glance. You may make multiple "
        "single-range requests instead.")


async def test_no_data_is_bare_204(api):
    img = await api.create(name="empty")
    r = await api.get(f"/v2/images/{img['id']}/file")
    assert r.status == 204 and r.body == b"" and r.headers == []


async def test_reupload_is_409(api, active):
    r = await api.upload(active, b"again")
    assert r.status == 409
    assert r.json()["message"].startswith(
        "Image status transition from active to saving is not allowed")


async def test_wrong_content_type_is_415(api):
    img = await api.create(name="x")
    r = await api.put(f"/v2/images/{img['id']}/file", b"x" * 100,
                      headers={"Content-Type": "application/json"})
    assert r.status == 415
    assert r.json()["message"] == (
        "The request media type application/json is not supported by this server.\n"
        "<br /><br />\nInvalid content type application/json")
    r = await api.put(f"/v2/images/{img['id']}/file", b"x" * 100)
    assert r.status == 415
    assert r.json()["message"] == (          # WebOb leaves its template variable unfilled
        "The request media type ${CONTENT_TYPE} is not supported by this server.\n"
        "<br /><br />\nInvalid content type None")
    assert (await api.get(f"/v2/images/{img['id']}")).json()["status"] == "queued"


async def test_over_size_cap_is_413_and_image_stays_queued(make_api):
    small = await make_api(image_size_cap=1000)
    img = await small.create(name="big")
    r = await small.upload(img["id"], b"x" * 5000)
    assert r.status == 413
    r = await small.put(f"/v2/images/{img['id']}/file", b"x" * 5000, headers=OCTET,
                        chunked=True)
    assert r.status == 413
    assert (await small.get(f"/v2/images/{img['id']}")).json()["status"] == "queued"
    assert (await small.upload(img["id"], b"x" * 1000)).status == 204


async def test_declared_size_header(api):
    img = await api.create(name="sized")
    r = await api.put(f"/v2/images/{img['id']}/file", b"abc",
                      headers={**OCTET, "x-openstack-image-size": "nope"})
    assert r.status == 400
    r = await api.put(f"/v2/images/{img['id']}/file", b"abc", chunked=True,
                      headers={**OCTET, "x-openstack-image-size": "3"})
    assert r.status == 204


async def test_upload_without_formats_is_400(api):
    r = await api.post("/v2/images", {"name": "noformat"})
    img = r.json()
    r = await api.upload(img["id"], b"abc")
    assert r.status == 400


async def test_zero_byte_image(api):
    img = await api.create(name="zero")
    assert (await api.upload(img["id"], b"")).status == 204
    r = await api.get(f"/v2/images/{img['id']}/file")
    assert r.status == 200 and r.body == b""
    r = await api.get(f"/v2/images/{img['id']}/file", headers={"Range": "bytes=0-"})
    assert r.status == 416


async def test_stage(api):
    img = await api.create(name="staged")
    r = await api.put(f"/v2/images/{img['id']}/stage", b"s" * 1000, headers=OCTET)
    assert r.status == 204
    assert (await api.get(f"/v2/images/{img['id']}")).json()["status"] == "uploading"
    r = await api.put(f"/v2/images/{img['id']}/stage", b"s", headers={"Content-Type": "text/plain"})
    assert r.status == 415
