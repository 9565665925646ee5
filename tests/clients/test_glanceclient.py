# Compatibility with python-glanceclient, unchanged: the `glance` CLI (subprocess, as an
# operator runs it without Keystone: --os-image-url + --os-auth-token) and the library
# (`glanceclient.Client('2', endpoint=..., token=...)`). One node per module; CLI invocations
# are kept few because each costs about a second of start-up.
from __future__ import annotations

import hashlib
import time
import uuid

import pytest

glanceclient = pytest.importorskip("glanceclient")
from glanceclient import exc as gexc  # noqa: E402

PROJECT_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
# the clients warn about their own deprecations; not ours to fix
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::Warning:openstack.*")]


def glance(tool, node, *args, token="x", **kw):
    return tool(["glance", "--os-image-url", node.url, "--os-auth-token", token, *args], **kw)


def ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def gc(node):
    return glanceclient.Client("2", endpoint=node.url, token="x")


def _new_image(gc, sample=None, **fields):
    fields.setdefault("name", f"lib-{uuid.uuid4().hex[:8]}")
    fields.setdefault("disk_format", "raw")
    fields.setdefault("container_format", "bare")
    img = gc.images.create(**fields)
    if sample is not None:
        with open(sample.path, "rb") as f:
            gc.images.upload(img["id"], f, image_size=len(sample.data))
    return img["id"]


# ---------------------------------------------------------------- the glance CLI

def test_cli_create_upload_show_download_delete(tool, table, node, sample, workdir):
    out = ok(glance(tool, node, "image-create", "--name", "gc-cli", "--disk-format", "raw",
                    "--container-format", "bare", "--property", "purpose=demo"))
    created = table(out)
    image_id = created["id"]
    assert created["status"] == "queued"
    assert created["purpose"] == "demo"
    assert created["visibility"] == "shared"

    ok(glance(tool, node, "image-upload", "--file", str(sample.path), image_id))

    shown = table(ok(glance(tool, node, "image-show", "--max-column-width", "400", image_id)))
    assert shown["status"] == "active"
    assert shown["size"] == str(len(sample.data))
    assert shown["checksum"] == sample.md5
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == sample.sha512

    target = workdir / "out.img"
    ok(glance(tool, node, "image-download", "--progress", "--file", str(target), image_id))
    assert target.read_bytes() == sample.data

    ok(glance(tool, node, "image-delete", image_id))
    gone = glance(tool, node, "image-show", image_id)
    assert gone.returncode == 1
    assert "404" in gone.stderr + gone.stdout


def test_cli_upload_progress_bar(tool, node, sample, gc):
    image_id = _new_image(gc)
    proc = glance(tool, node, "image-upload", "--progress", "--file", str(sample.path), image_id,
                  tty_stdout=True)
    ok(proc)
    assert "100%" in proc.stdout + proc.stderr
    assert gc.images.get(image_id)["status"] == "active"


def test_cli_tags_and_properties(tool, table, node, gc):
    image_id = _new_image(gc, purpose="demo")

    ok(glance(tool, node, "image-tag-update", image_id, "footag"))
    out = ok(glance(tool, node, "image-update", "--property", "purpose=changed",
                    "--property", "extra=1", "--name", "renamed", image_id))
    shown = table(out)
    assert shown["purpose"] == "changed"
    assert shown["extra"] == "1"
    assert shown["name"] == "renamed"
    assert "footag" in shown["tags"]

    shown = table(ok(glance(tool, node, "image-update", "--remove-property", "extra", image_id)))
    assert "extra" not in shown
    assert shown["purpose"] == "changed"

    ok(glance(tool, node, "image-tag-delete", image_id, "footag"))
    img = gc.images.get(image_id)
    assert img["tags"] == []
    assert "extra" not in img and img["purpose"] == "changed"


def test_cli_list_with_filters(tool, rows, node, gc, sample):
    tag = f"t{uuid.uuid4().hex[:6]}"
    a = _new_image(gc, sample, name="flt-a", flavor_kind="alpha")
    b = _new_image(gc, name="flt-b", flavor_kind="beta")
    gc.image_tags.update(b, tag)

    listed = rows(ok(glance(tool, node, "image-list", "--property-filter", "flavor_kind=alpha")))
    assert [r[0] for r in listed] == [a]

    listed = rows(ok(glance(tool, node, "image-list", "--tag", tag, "--sort-key", "name")))
    assert [r[0] for r in listed] == [b]

    listed = rows(ok(glance(tool, node, "image-list", "--checksum", sample.md5,
                            "--page-size", "1", "--sort", "created_at:asc")))
    ids = [r[0] for r in listed]
    assert a in ids and b not in ids


def test_cli_members(tool, rows, node, gc):
    image_id = _new_image(gc)
    out = ok(glance(tool, node, "member-create", image_id, PROJECT_B))
    assert [image_id, PROJECT_B, "pending"] in rows(out)

    out = ok(glance(tool, node, "member-list", "--image-id", image_id))
    assert [image_id, PROJECT_B, "pending"] in rows(out)

    # noauth: every request is admin, and admin may set a member's status (as Glance's noauth)
    out = ok(glance(tool, node, "member-update", image_id, PROJECT_B, "accepted"))
    assert [image_id, PROJECT_B, "accepted"] in rows(out)

    ok(glance(tool, node, "member-delete", image_id, PROJECT_B))
    assert list(gc.image_members.list(image_id)) == []


def test_cli_members_accept_with_tokens(tool, table, rows, token_node):
    """Two projects, each with its own token (tokens auth mode): the owner shares, the
    consumer accepts with the real CLI, then lists and downloads; the owner cannot accept."""
    node = token_node
    created = table(ok(glance(tool, node, "image-create", "--name", "tok-shared", "--disk-format",
                              "raw", "--container-format", "bare", token="tok-owner")))
    image_id = created["id"]
    assert created["owner"] == "a" * 32
    assert created["visibility"] == "shared"
    ok(glance(tool, node, "member-create", image_id, PROJECT_B, token="tok-owner"))
    assert image_id not in ok(glance(tool, node, "image-list", token="tok-consumer"))

    denied = glance(tool, node, "member-update", image_id, PROJECT_B, "accepted", token="tok-owner")
    assert denied.returncode == 1 and "403" in denied.stderr + denied.stdout

    out = ok(glance(tool, node, "member-update", image_id, PROJECT_B, "accepted",
                    token="tok-consumer"))
    assert [image_id, PROJECT_B, "accepted"] in rows(out)
    listed = rows(ok(glance(tool, node, "image-list", token="tok-consumer")))
    assert [image_id, "tok-shared"] in listed


def test_cli_deactivate_reactivate(tool, node, gc, sample, workdir):
    image_id = _new_image(gc, sample)
    ok(glance(tool, node, "image-deactivate", image_id))
    assert gc.images.get(image_id)["status"] == "deactivated"
    # admin may still download a deactivated image (Glance does the same)
    target = workdir / "deact.img"
    ok(glance(tool, node, "image-download", "--file", str(target), image_id))
    assert target.read_bytes() == sample.data
    ok(glance(tool, node, "image-reactivate", image_id))
    assert gc.images.get(image_id)["status"] == "active"


def test_cli_create_with_file_in_one_step(tool, table, node, sample):
    # the sample holds raw bytes: declaring qcow2 would be refused by format inspection (415)
    shown = table(ok(glance(tool, node, "image-create", "--name", "one-step", "--disk-format",
                            "raw", "--container-format", "bare", "--file", str(sample.path))))
    assert shown["status"] == "active"
    assert shown["checksum"] == sample.md5
    assert shown["size"] == str(len(sample.data))


def test_cli_image_data_from_stdin(tool, table, node, sample):
    # glanceclient takes a non-TTY stdin as the image data (chunked upload of a pipe)
    shown = table(ok(glance(tool, node, "image-create", "--name", "from-stdin", "--disk-format",
                            "raw", "--container-format", "bare", stdin_path=sample.path)))
    assert shown["status"] == "active"
    assert shown["checksum"] == sample.md5
    assert shown["size"] == str(len(sample.data))


def _wait_active(gc, image_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        img = gc.images.get(image_id)
        if img["status"] in ("active", "killed") or time.monotonic() > deadline:
            return img
        time.sleep(0.05)


def test_cli_create_via_import_glance_direct(tool, table, node, sample, gc):
    created = table(ok(glance(tool, node, "image-create-via-import", "--name", "via-import",
                              "--disk-format", "raw", "--container-format", "bare",
                              "--import-method", "glance-direct", "--file", str(sample.path))))
    img = _wait_active(gc, created["id"])
    assert img["status"] == "active"
    assert img["checksum"] == sample.md5 and img["size"] == len(sample.data)
    assert b"".join(gc.images.data(img["id"])) == sample.data


def test_cli_task_list(tool, node):
    # glanceclient lists /v2/tasks, then fetches /v2/schemas/task to shape the table.
    out = ok(glance(tool, node, "task-list"))
    assert "Status" in out and "Type" in out


# ---------------------------------------------------------------- the library

def test_lib_full_flow(gc, sample):
    img = gc.images.create(name="lib-flow", disk_format="raw", container_format="bare",
                           visibility="shared", min_disk=1, purpose="demo")
    image_id = img["id"]
    assert img["status"] == "queued" and img["purpose"] == "demo" and img["min_disk"] == 1

    with open(sample.path, "rb") as f:
        gc.images.upload(image_id, f)        # chunked transfer encoding, no size header
    img = gc.images.get(image_id)
    assert img["status"] == "active"
    assert img["size"] == len(sample.data)
    assert img["checksum"] == sample.md5
    assert img["os_hash_value"] == sample.sha512

    body = gc.images.data(image_id)           # verifies os_hash_value while reading
    assert b"".join(body) == sample.data

    ids = [i["id"] for i in gc.images.list(filters={"name": "lib-flow"})]
    assert ids == [image_id]

    gc.image_tags.update(image_id, "a")
    gc.image_tags.update(image_id, "b")
    gc.image_tags.delete(image_id, "a")
    img = gc.images.update(image_id, remove_props=["purpose"], name="lib-flow-2", extra="x")
    assert img["tags"] == ["b"] and "purpose" not in img
    assert img["name"] == "lib-flow-2" and img["extra"] == "x"

    member = gc.image_members.create(image_id, PROJECT_B)
    assert member["status"] == "pending" and member["member_id"] == PROJECT_B
    member = gc.image_members.update(image_id, PROJECT_B, "rejected")
    assert member["status"] == "rejected"
    assert [m["member_id"] for m in gc.image_members.list(image_id)] == [PROJECT_B]

    gc.images.deactivate(image_id)
    assert gc.images.get(image_id)["status"] == "deactivated"
    gc.images.reactivate(image_id)
    assert gc.images.get(image_id)["status"] == "active"

    gc.images.delete(image_id)
    with pytest.raises(gexc.HTTPNotFound):
        gc.images.get(image_id)


def test_lib_errors_are_glance_errors(gc):
    with pytest.raises(gexc.HTTPNotFound):
        gc.images.get(str(uuid.uuid4()))
    image_id = _new_image(gc)
    with pytest.raises(gexc.HTTPForbidden):             # read-only attribute
        gc.images.update(image_id, checksum="0" * 32)
    with pytest.raises(gexc.HTTPConflict):              # duplicate member
        gc.image_members.create(image_id, PROJECT_B)
        gc.image_members.create(image_id, PROJECT_B)
    with pytest.raises(gexc.HTTPNotFound):              # tag not present
        gc.image_tags.delete(image_id, "nope")


def test_lib_no_data_and_pagination(gc, node):
    queued = _new_image(gc, name="no-data")
    assert node.request("GET", f"/v2/images/{queued}/file")[0] == 204
    body = gc.images.data(queued)
    assert not body        # 204: a proxy of None (glanceclient then reports "no data")

    tag = f"p{uuid.uuid4().hex[:6]}"
    ids = {_new_image(gc, name=f"{tag}-{i}", visibility=("public", "private")[i % 2])
           for i in range(5)}
    for image_id in ids:
        gc.image_tags.update(image_id, tag)
    # page_size 2 walks the `next` links: every image once
    paged = [i["id"] for i in gc.images.list(filters={"tag": [tag]}, page_size=2)]
    assert sorted(paged) == sorted(ids)
    public = [i["id"] for i in gc.images.list(filters={"tag": [tag], "visibility": "public"})]
    assert len(public) == 3
    by_name = [i["name"] for i in gc.images.list(filters={"tag": [tag]},
                                                  sort="name:desc,created_at:asc")]
    assert by_name == sorted(by_name, reverse=True)


def test_lib_partial_download_hash_mismatch_is_detected(gc, sample):
    # The client verifies os_hash_value: a correct server passes this silently.
    image_id = _new_image(gc, sample)
    data = b"".join(gc.images.data(image_id, do_checksum=True))
    assert hashlib.sha512(data).hexdigest() == sample.sha512


def test_lib_members_with_trusted_headers(make_node, sample):
    """Owner project A shares an image with project B; B sees it pending, accepts it and then
    finds it in its default list. Needs the trusted-headers auth mode (identity headers as
    keystonemiddleware would set them), which glanceclient's library can send."""
    node = make_node("trusted-headers")
    project_a, project_b = "a" * 32, PROJECT_B

    def client(project, roles="member,reader"):
        return glanceclient.Client("2", endpoint=node.url, token="x", identity_headers={
            "X-Identity-Status": "Confirmed", "X-Roles": roles,
            "X-Project-Id": project, "X-User-Id": f"user-{project[:4]}"})

    owner, consumer = client(project_a), client(project_b)
    image_id = _new_image(owner, sample, visibility="shared")
    assert owner.images.get(image_id)["owner"] == project_a

    with pytest.raises(gexc.HTTPNotFound):
        consumer.images.get(image_id)
    owner.image_members.create(image_id, project_b)
    assert image_id not in [i["id"] for i in consumer.images.list()]
    pending = [i["id"] for i in consumer.images.list(filters={"member_status": "pending"})]
    assert image_id in pending

    with pytest.raises(gexc.HTTPForbidden):        # the owner cannot accept for the member
        owner.image_members.update(image_id, project_b, "accepted")
    consumer.image_members.update(image_id, project_b, "accepted")
    assert image_id in [i["id"] for i in consumer.images.list()]
    assert b"".join(consumer.images.data(image_id)) == sample.data
    with pytest.raises(gexc.HTTPForbidden):        # a member cannot modify the image
        consumer.images.update(image_id, name="stolen")
