# Compatibility with python-openstackclient, unchanged, without Keystone:
# `openstack --os-auth-type none --os-endpoint URL image ...` (subprocess, JSON output).
# Member commands that take a project resolve it through the identity API, which does not
# exist without Keystone (they fail the same way against Glance): members are added here
# through the SDK and only listed with the CLI. Invocations are few (~1.5 s each).
from __future__ import annotations

import json
import uuid

import pytest

openstack = pytest.importorskip("openstack")
pytest.importorskip("openstackclient")

PROJECT_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
# the clients warn about their own deprecations; not ours to fix
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::Warning:openstack.*")]


def osc(tool, node, *args):
    return tool(["openstack", "--os-auth-type", "none", "--os-endpoint", node.url, "image", *args])


def ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def ok_json(proc):
    return json.loads(ok(proc))


def test_image_lifecycle(tool, node, sample, workdir):
    name = f"osc-{uuid.uuid4().hex[:8]}"
    created = ok_json(osc(tool, node, "create", "--disk-format", "raw", "--container-format",
                          "bare", "--property", "purpose=demo", "--min-disk", "1",
                          "--file", str(sample.path), name, "-f", "json"))
    image_id = created["id"]
    assert created["status"] == "active"
    assert created["checksum"] == sample.md5
    assert created["size"] == len(sample.data)
    assert created["properties"]["purpose"] == "demo"

    target = workdir / "osc.out"
    ok(osc(tool, node, "save", "--file", str(target), name))
    assert target.read_bytes() == sample.data

    ok(osc(tool, node, "set", "--tag", "footag", "--tag", "bartag", "--property",
           "purpose=changed", "--property", "extra=1", "--name", f"{name}-2", "--protected",
           name))
    shown = ok_json(osc(tool, node, "show", image_id, "-f", "json"))
    assert shown["name"] == f"{name}-2"
    assert sorted(shown["tags"]) == ["bartag", "footag"]
    assert shown["properties"]["purpose"] == "changed"
    assert shown["properties"]["extra"] == "1"
    assert shown["protected"] is True

    ok(osc(tool, node, "unset", "--property", "extra", "--tag", "bartag", image_id))
    ok(osc(tool, node, "set", "--deactivate", "--unprotected", image_id))
    shown = ok_json(osc(tool, node, "show", image_id, "-f", "json"))
    assert "extra" not in shown["properties"]
    assert shown["properties"]["purpose"] == "changed"
    assert shown["tags"] == ["footag"]
    assert shown["status"] == "deactivated"
    assert shown["protected"] is False

    ok(osc(tool, node, "set", "--activate", image_id))
    ok(osc(tool, node, "delete", image_id))
    gone = osc(tool, node, "show", image_id)
    assert gone.returncode == 1
    assert "No Image found" in gone.stderr or "404" in gone.stderr or "not found" in gone.stderr.lower()


@pytest.fixture(scope="module")
def conn(node):
    c = openstack.connect(auth_type="none", auth={"endpoint": node.url})
    yield c
    c.close()


def test_list_with_filters(tool, node, conn):
    tag = f"t{uuid.uuid4().hex[:6]}"
    a = conn.image.create_image(name=f"{tag}-a", disk_format="raw", container_format="bare",
                                tags=[tag], flavor_kind="alpha")
    b = conn.image.create_image(name=f"{tag}-b", disk_format="qcow2", container_format="bare",
                                tags=[tag], flavor_kind="beta")

    listed = ok_json(osc(tool, node, "list", "--tag", tag, "--sort", "name:desc", "-f", "json"))
    assert [i["ID"] for i in listed] == [b.id, a.id]
    assert all(i["Status"] == "queued" for i in listed)

    listed = ok_json(osc(tool, node, "list", "--property", "flavor_kind=alpha", "--long",
                         "-f", "json"))
    assert [i["ID"] for i in listed] == [a.id]
    assert listed[0]["Disk Format"] == "raw"

    listed = ok_json(osc(tool, node, "list", "--name", b.name, "--status", "queued", "--limit",
                         "1", "-f", "json"))
    assert [i["ID"] for i in listed] == [b.id]


def test_member_list(tool, node, conn):
    img = conn.image.create_image(name="osc-shared", disk_format="raw", container_format="bare")
    conn.image.add_member(img, member=PROJECT_B)
    listed = ok_json(osc(tool, node, "member", "list", img.id, "-f", "json"))
    assert [(m["Member ID"], m["Status"]) for m in listed] == [(PROJECT_B, "pending")]


def test_admin_token_auth_type(tool, token_node):
    """`--os-auth-type admin_token --os-token T --os-endpoint URL/v2` sends X-Auth-Token: the
    tokens auth mode serves each project its own images. (With the endpoint given without
    /v2 the SDK asks for /images, which Glance and tessera both answer with the 300
    versions document, and OSC fails: the /v2 suffix is needed with this auth type.)"""
    def osc_as(token, *args):
        return tool(["openstack", "--os-auth-type", "admin_token", "--os-token", token,
                     "--os-endpoint", token_node.url + "/v2", "image", *args])

    created = ok_json(osc_as("tok-owner", "create", "--disk-format", "raw", "--container-format",
                             "bare", "--private", "osc-token", "-f", "json"))
    assert created["owner"] == "a" * 32
    assert created["visibility"] == "private"
    mine = ok_json(osc_as("tok-owner", "list", "-f", "json"))
    theirs = ok_json(osc_as("tok-consumer", "list", "-f", "json"))
    assert created["id"] in [i["ID"] for i in mine]
    assert created["id"] not in [i["ID"] for i in theirs]
