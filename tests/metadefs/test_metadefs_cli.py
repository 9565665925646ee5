# The metadefs service through real command lines against a real node (subprocess, real
# socket): every `glance md-*` command of python-glanceclient, unchanged -- run in-process
# through glanceclient's own shell class (the code the `glance` script runs), plus a few runs
# of the real script (each costs a second or two of interpreter start-up) -- and tessera's own
# `tessera metadefs load/export` (through cli.main), including loading into the data
# directory of a running node.
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess

import pytest

from tessera import cli

pytest.importorskip("glanceclient")
pytestmark = pytest.mark.filterwarnings("ignore:`version` keyword:DeprecationWarning")
# tests/clients' helpers, loaded under this name by tests/metadefs/conftest.py
client_support = importlib.import_module("tessera_tests_client_support")

run_tool = client_support.run_tool
parse_table = client_support.parse_table
parse_rows = client_support.parse_rows


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = client_support.start_node(tmp_path_factory.mktemp("mdnode"))
    yield n
    client_support.stop_node(n)


def glance(node, *args):
    return run_tool(["glance", "--os-image-url", node.url, "--os-auth-token", "x", *args])


def ok(proc) -> str:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def tessera(*args: str) -> subprocess.CompletedProcess:
    """`tessera ARGS`, run in-process through the CLI's entry point (output captured)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(["tessera", *args], code, out.getvalue(),
                                       err.getvalue())


@pytest.fixture
def md(node, monkeypatch):
    """Run one `glance md-*` command in-process (glanceclient's own shell class, the code the
    `glance` script runs) against the node; returns its stdout, raises the client's error."""
    from glanceclient.shell import OpenStackImagesShell

    for key in [k for k in os.environ if k.startswith("OS_")]:
        monkeypatch.delenv(key)

    def run(*args: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            OpenStackImagesShell().main(["--os-image-url", node.url, "--os-auth-token", "x",
                                         *args])
        return out.getvalue()

    return run


def test_every_md_command(md, node):
    from glanceclient import exc as gexc

    ns = "Test::Every"
    created = parse_table(md("md-namespace-create", ns, "--display-name", "Every",
                             "--description", "all commands", "--visibility", "public"))
    assert created["namespace"] == ns and created["visibility"] == "public"
    assert ns in {r[0] for r in parse_rows(md("md-namespace-list"))}
    # properties
    prop = parse_table(md("md-property-create", ns, "--name", "cores", "--title", "Cores",
                          "--type", "integer", "--schema", '{"minimum": 1, "maximum": 64}'))
    assert prop["maximum"] == "64"
    updated = parse_table(md("md-property-update", ns, "cores", "--title", "CPU cores",
                             "--schema", '{"type": "integer", "maximum": 128}'))
    assert updated["title"] == "CPU cores" and updated["maximum"] == "128"
    assert parse_table(md("md-property-show", ns, "cores"))["title"] == "CPU cores"
    assert parse_rows(md("md-property-list", ns)) == [["cores", "CPU cores", "integer"]]
    # objects
    obj = parse_table(md("md-object-create", ns, "--name", "Limits", "--schema", json.dumps(
        {"description": "caps", "properties": {"ram": {"title": "RAM", "type": "integer"}}})))
    assert obj["properties"] == '["ram"]'
    assert parse_table(md("md-object-update", ns, "Limits", "--name", "Caps"))["name"] == "Caps"
    assert parse_table(md("md-object-show", ns, "Caps"))["description"] == "caps"
    assert parse_table(md("md-object-property-show", ns, "Caps", "ram"))["title"] == "RAM"
    assert parse_rows(md("md-object-list", ns)) == [["Caps", "caps"]]
    # tags
    assert parse_table(md("md-tag-create", ns, "--name", "gold"))["name"] == "gold"
    assert parse_rows(md("md-tag-create-multiple", ns, "--names", "silver,bronze")) == [
        ["silver"], ["bronze"]]                     # replaces the set (no --append)
    assert parse_table(md("md-tag-update", ns, "silver", "--name", "steel"))["name"] == "steel"
    assert parse_table(md("md-tag-show", ns, "steel"))["name"] == "steel"
    md("md-tag-delete", ns, "bronze")
    assert parse_rows(md("md-tag-list", ns)) == [["steel"]]
    # resource types
    assoc = parse_table(md("md-resource-type-associate", ns, "--name", "OS::Glance::Image",
                           "--prefix", "every_", "--properties-target", "image"))
    assert assoc["prefix"] == "every_"
    assert ["OS::Glance::Image"] in parse_rows(md("md-resource-type-list"))
    assert parse_rows(md("md-namespace-resource-type-list", ns)) == [
        ["OS::Glance::Image", "every_", "image"]]
    shown = parse_table(md("md-namespace-show", ns, "--resource-type", "OS::Glance::Image"))
    assert shown["properties"] == '["every_cores"]' and shown["objects"] == '["Caps"]'
    md("md-resource-type-deassociate", ns, "OS::Glance::Image")
    assert parse_rows(md("md-namespace-resource-type-list", ns)) == []
    # protection, then the delete-all commands and the namespace itself
    assert parse_table(md("md-namespace-update", ns, "--protected", "True"))["protected"] == \
        "True"
    with pytest.raises(gexc.HTTPForbidden, match="is protected and cannot be deleted"):
        md("md-namespace-delete", ns)
    with pytest.raises(gexc.HTTPForbidden):
        md("md-property-delete", ns, "cores")
    md("md-namespace-update", ns, "--protected", "False")
    md("md-property-delete", ns, "cores")
    md("md-object-delete", ns, "Caps")
    md("md-property-create", ns, "--name", "p", "--title", "P", "--type", "string",
       "--schema", "{}")
    md("md-object-create", ns, "--name", "o", "--schema", "{}")
    md("md-namespace-properties-delete", ns)
    md("md-namespace-objects-delete", ns)
    md("md-namespace-tags-delete", ns)
    bare = parse_table(md("md-namespace-show", ns))
    assert not {"properties", "objects", "tags"} & set(bare)
    md("md-namespace-delete", ns)
    with pytest.raises(gexc.HTTPNotFound):
        md("md-namespace-show", ns)
    # X-Openstack-Append over raw HTTP (glanceclient 4.13's --append sends a bool header
    # value it cannot encode, against any server)
    md("md-namespace-create", ns)
    md("md-tag-create", ns, "--name", "first")
    status, _, _ = node.request("POST", f"/v2/metadefs/namespaces/{ns}/tags",
                                json.dumps({"tags": [{"name": "second"}]}),
                                {"Content-Type": "application/json",
                                 "X-Openstack-Append": "true"})
    assert status == 201
    assert parse_rows(md("md-tag-list", ns)) == [["first"], ["second"]]


def test_glance_script(node, tmp_path):
    """A few runs of the real `glance` script (subprocess), as an operator types them."""
    doc = {"namespace": "Test::Script", "visibility": "public", "protected": True,
           "properties": {"speed": {"title": "Speed", "type": "string",
                                    "enum": ["slow", "fast"]}}}
    (tmp_path / "ns.json").write_text(json.dumps(doc))
    imported = parse_table(ok(glance(node, "md-namespace-import", "--file",
                                     str(tmp_path / "ns.json"))))
    assert imported["namespace"] == "Test::Script" and imported["properties"] == '["speed"]'
    refused = glance(node, "md-namespace-delete", "Test::Script")
    assert refused.returncode != 0
    assert "is protected and cannot be deleted" in refused.stderr


def test_glance_md_import_and_tessera_load_export(node, tmp_path):
    status, _, _ = node.request("POST", "/v2/metadefs/namespaces", json.dumps(
        {"namespace": "Test::Imported", "visibility": "public",
         "resource_type_associations": [{"name": "OS::Nova::Flavor", "prefix": "imp:"}],
         "properties": {"speed": {"title": "Speed", "type": "string",
                                  "enum": ["slow", "fast"]}}}),
        {"Content-Type": "application/json"})
    assert status == 201
    # the starter namespaces, loaded into the running node's data directory
    loaded = tessera("metadefs", "load", "--data-dir", str(node.data_dir))
    assert loaded.returncode == 0, loaded.stderr
    assert "created: 3" in loaded.stdout
    again = tessera("metadefs", "load", "--data-dir", str(node.data_dir))
    assert "created: 0" in again.stdout and "unchanged: 3" in again.stdout
    names = {row[0] for row in parse_rows(ok(glance(node, "md-namespace-list")))}
    assert {"Test::Imported", "Tessera::Image::Boot", "Tessera::Image::OperatingSystem",
            "Tessera::Image::Provenance"} <= names
    types = {t["name"] for t in node.get_json("/v2/metadefs/resource_types")["resource_types"]}
    assert {"OS::Glance::Image", "OS::Nova::Flavor", "OS::Cinder::Volume"} <= types
    # export, load into a fresh data directory, export again: the same files
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    exported = tessera("metadefs", "export", "--data-dir", str(node.data_dir), str(out1))
    assert exported.returncode == 0, exported.stderr
    assert (out1 / "Test-Imported.json").exists()
    fresh = tmp_path / "fresh"
    assert tessera("metadefs", "load", "--data-dir", str(fresh), str(out1)).returncode == 0
    assert tessera("metadefs", "export", "--data-dir", str(fresh), str(out2)).returncode == 0
    files1 = {p.name: json.loads(p.read_text()) for p in out1.glob("*.json")}
    files2 = {p.name: json.loads(p.read_text()) for p in out2.glob("*.json")}
    assert files1 == files2 and len(files1) >= 5
    assert files1["Test-Imported.json"]["properties"]["speed"]["enum"] == ["slow", "fast"]
    # a bad directory is refused with the file named, nothing loaded
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text('{"namespace": "Bad", "visibility": "nope"}')
    refused = tessera("metadefs", "load", "--data-dir", str(fresh), str(bad))
    assert refused.returncode == 1 and "x.json" in refused.stderr
