# Compatibility with openstacksdk, unchanged, without Keystone: `openstack.connect(
# auth_type='none', auth={'endpoint': URL})` (keystoneauth's `none` plugin: version discovery
# on GET / first) and the endpoint-override form. In-process, so each test is cheap.
from __future__ import annotations

import hashlib
import time
import uuid

import pytest

openstack = pytest.importorskip("openstack")
from openstack import exceptions as sdk_exc  # noqa: E402

PROJECT_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
# the clients warn about their own deprecations; not ours to fix
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::Warning:openstack.*")]


@pytest.fixture(scope="module")
def conn(node):
    c = openstack.connect(auth_type="none", auth={"endpoint": node.url})
    yield c
    c.close()


def _create(conn, sample, name=None, **props):
    name = name or f"sdk-{uuid.uuid4().hex[:8]}"
    with open(sample.path, "rb") as f:
        img = conn.image.create_image(name=name, disk_format="raw", container_format="bare",
                                      data=f, validate_checksum=False, **props)
    return conn.image.get_image(img.id)


def test_connect_with_endpoint_override(node):
    c = openstack.connect(auth_type="none", auth={"endpoint": node.url},
                          image_endpoint_override=node.url)
    try:
        assert isinstance(list(c.image.images(limit=1)), list)
    finally:
        c.close()


def test_create_upload_show_download(conn, sample):
    img = _create(conn, sample, purpose="demo")
    assert img.status == "active"
    assert img.size == len(sample.data)
    assert img.checksum == sample.md5
    assert img.hash_algo == "sha512" and img.hash_value == sample.sha512
    assert img.disk_format == "raw" and img.container_format == "bare"
    assert img.properties.get("purpose") == "demo"
    assert img.visibility == "shared"

    resp = conn.image.download_image(img, stream=True)
    got = b"".join(resp.iter_content(65536))
    assert got == sample.data
    # openstacksdk reads Content-MD5 when present; if sent it must be the right one
    if resp.headers.get("Content-MD5"):
        assert resp.headers["Content-MD5"] == sample.md5

    # without stream the SDK reads the whole body and checks it against os_hash_value
    whole = conn.image.download_image(img)
    assert whole.content == sample.data


def test_download_to_file(conn, sample, workdir):
    img = _create(conn, sample)
    target = workdir / "sdk.out"
    conn.image.download_image(img, output=str(target))
    assert target.read_bytes() == sample.data


def test_list_with_filters(conn, sample):
    tag = f"t{uuid.uuid4().hex[:6]}"
    a = _create(conn, sample, name=f"flt-{tag}-a")
    b = conn.image.create_image(name=f"flt-{tag}-b", disk_format="qcow2",
                                container_format="bare", tags=[tag])
    names = {i.name: i for i in conn.image.images(tag=tag)}
    assert set(names) == {b.name}
    assert [i.id for i in conn.image.images(name=a.name)] == [a.id]
    assert b.id in [i.id for i in conn.image.images(status="queued")]
    assert a.id not in [i.id for i in conn.image.images(status="queued")]
    assert a.id in [i.id for i in conn.image.images(size_min=len(sample.data) - 1)]
    # pagination through `next` links: page size 1, every image seen once
    paged = [i.id for i in conn.image.images(limit=1, sort="name:asc")]
    assert len(paged) == len(set(paged)) and {a.id, b.id} <= set(paged)


def test_tags_and_properties(conn, sample):
    img = _create(conn, sample, purpose="demo")
    conn.image.add_tag(img, "footag")
    conn.image.add_tag(img, "bartag")
    conn.image.remove_tag(img, "bartag")
    img = conn.image.update_image(img.id, name="sdk-renamed", purpose="changed", extra="1")
    assert img.name == "sdk-renamed"
    assert img.tags == ["footag"]
    assert img.properties.get("purpose") == "changed" and img.properties.get("extra") == "1"

    # removal the way openstackclient's `image unset --property` does it
    fetched = conn.image.get_image(img.id)
    props = dict(fetched.properties)
    props.pop("extra")
    conn.image.update_image(fetched, properties=props)
    img = conn.image.get_image(img.id)
    assert "extra" not in img.properties and img.properties.get("purpose") == "changed"


def test_update_with_fetched_object(conn, sample):
    # Glance rejects this when its records carry read-only `stores` (gotcha 4 in
    # glance-clients.md); tessera should accept what the SDK sends for a fetched object.
    img = _create(conn, sample)
    img = conn.image.update_image(conn.image.get_image(img.id), name="from-fetched")
    assert conn.image.get_image(img.id).name == "from-fetched"


def test_stage_and_import_glance_direct(conn, sample):
    img = conn.image.create_image(name="sdk-import", disk_format="raw", container_format="bare")
    with open(sample.path, "rb") as f:
        conn.image.stage_image(img, data=f)
    assert conn.image.get_image(img).status == "uploading"
    conn.image.import_image(img, method="glance-direct")
    deadline = time.monotonic() + 30
    while conn.image.get_image(img).status != "active" and time.monotonic() < deadline:
        time.sleep(0.05)
    img = conn.image.get_image(img)
    assert img.status == "active"
    assert img.checksum == sample.md5 and img.hash_value == sample.sha512


def test_members(conn, sample):
    img = _create(conn, sample)
    member = conn.image.add_member(img, member=PROJECT_B)
    assert member.id == PROJECT_B and member.status == "pending"
    assert [m.id for m in conn.image.members(img)] == [PROJECT_B]
    assert conn.image.get_member(PROJECT_B, img).status == "pending"
    member = conn.image.update_member(member, img, status="accepted")
    assert member.status == "accepted"
    conn.image.remove_member(PROJECT_B, img)
    assert list(conn.image.members(img)) == []


def test_deactivate_reactivate_delete(conn, sample):
    img = _create(conn, sample)
    conn.image.deactivate_image(img)
    assert conn.image.get_image(img).status == "deactivated"
    conn.image.reactivate_image(img)
    assert conn.image.get_image(img).status == "active"
    conn.image.delete_image(img)
    assert conn.image.find_image(img.id) is None
    with pytest.raises(sdk_exc.NotFoundException):
        conn.image.get_image(img.id)


def test_errors_map_to_sdk_exceptions(conn, sample):
    with pytest.raises(sdk_exc.NotFoundException):
        conn.image.get_image(str(uuid.uuid4()))
    img = conn.image.create_image(name="proto", disk_format="raw", container_format="bare")
    conn.image.update_image(img.id, is_protected=True)
    with pytest.raises(sdk_exc.ForbiddenException):
        conn.image.delete_image(img)
    conn.image.update_image(img.id, is_protected=False)
    conn.image.delete_image(img)


def test_schema_and_find_by_name(conn, sample):
    schema = conn.image.get_image_schema()
    assert "properties" in schema and "name" in schema.properties
    img = _create(conn, sample, name=f"findme-{uuid.uuid4().hex[:6]}")
    assert conn.image.find_image(img.name).id == img.id


def test_members_with_trusted_headers(make_node, sample):
    """Owner project A shares, member project B accepts: identity headers sent by the SDK's
    session (as a token-validating proxy in front of tessera would add them)."""
    node = make_node("trusted-headers")

    def connect(project):
        c = openstack.connect(auth_type="none", auth={"endpoint": node.url})
        c.session.additional_headers.update({
            "X-Identity-Status": "Confirmed", "X-Roles": "member,reader",
            "X-Project-Id": project, "X-User-Id": f"user-{project[:4]}"})
        return c

    owner, consumer = connect("a" * 32), connect(PROJECT_B)
    try:
        img = _create(owner, sample)
        assert img.owner == "a" * 32
        assert consumer.image.find_image(img.id) is None
        owner.image.add_member(img, member=PROJECT_B)
        assert img.id in [i.id for i in consumer.image.images(member_status="pending")]
        assert img.id not in [i.id for i in consumer.image.images()]
        consumer.image.update_member(PROJECT_B, img, status="accepted")
        assert img.id in [i.id for i in consumer.image.images()]
        got = b"".join(consumer.image.download_image(img, stream=True).iter_content(1 << 20))
        assert hashlib.sha512(got).hexdigest() == sample.sha512
    finally:
        owner.close()
        consumer.close()
