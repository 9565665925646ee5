# The metadefs service through real command lines against a real node (subprocess, real
# socket): python-glanceclient's `glance md-*` commands, unchanged, and tessera's own
# `tessera metadefs load/export` (in-process through cli.main), including loading into the
# data directory of a running node. glance invocations are kept few: each costs a second or
# two of interpreter start-up.
from __future__ import annotations

import contextlib
import importlib
import io
import json
import subprocess

import pytest

from tessera import cli

pytest.importorskip("glanceclient")
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


def test_glance_md_commands(node, tmp_path):
    created = parse_table(ok(glance(node, "md-namespace-create", "Test::CLI", "--display-name",
                                    "CLI", "--description", "from glance", "--visibility",
                                    "public")))
    assert created["namespace"] == "Test::CLI" and created["visibility"] == "public"
    prop = parse_table(ok(glance(node, "md-property-create", "Test::CLI", "--name", "cores",
                                 "--title", "Cores", "--type", "integer", "--schema",
                                 '{"minimum": 1, "maximum": 64}')))
    assert prop["maximum"] == "64"
    obj = parse_table(ok(glance(node, "md-object-create", "Test::CLI", "--name", "Limits",
                                "--schema", json.dumps({"description": "caps", "properties": {
                                    "ram": {"title": "RAM", "type": "integer"}}}))))
    assert obj["properties"] == '["ram"]'
    tags = parse_rows(ok(glance(node, "md-tag-create-multiple", "Test::CLI", "--names",
                                "gold,silver")))
    assert tags == [["gold"], ["silver"]]
    ok(glance(node, "md-resource-type-associate", "Test::CLI", "--name", "OS::Glance::Image",
              "--prefix", "cli_"))
    prefixed = ok(glance(node, "md-namespace-show", "Test::CLI", "--resource-type",
                         "OS::Glance::Image"))
    assert parse_table(prefixed)["properties"] == '["cli_cores"]'
    status, _, body = node.request(
        "GET", "/v2/metadefs/namespaces/Test::CLI/properties/cli_cores"
               "?resource_type=OS::Glance::Image")
    assert status == 200 and json.loads(body)["title"] == "Cores"
    status, _, _ = node.request("PUT", "/v2/metadefs/namespaces/Test::CLI/tags/silver",
                                json.dumps({"name": "bronze"}),
                                {"Content-Type": "application/json"})
    assert status == 200
    shown = parse_table(ok(glance(node, "md-namespace-update", "Test::CLI", "--protected",
                                  "True")))
    assert shown["protected"] == "True"
    assert shown["tags"] == '["bronze", "gold"]'
    refused = glance(node, "md-namespace-delete", "Test::CLI")
    assert refused.returncode != 0
    assert "is protected and cannot be deleted" in refused.stderr
    # the same catalog over raw HTTP on the real socket
    status, _, body = node.request("GET", "/v2/metadefs/namespaces/Test::CLI/objects/Limits")
    assert status == 200 and json.loads(body)["description"] == "caps"
    status, _, body = node.request("POST", "/v2/metadefs/namespaces/Test::CLI/tags",
                                   json.dumps({"tags": [{"name": "extra"}]}),
                                   {"Content-Type": "application/json",
                                    "X-Openstack-Append": "true"})
    assert status == 201
    listed = parse_rows(ok(glance(node, "md-tag-list", "Test::CLI")))
    assert listed == [["bronze"], ["extra"], ["gold"]]


def test_glance_md_import_and_tessera_load_export(node, tmp_path):
    doc = {"namespace": "Test::Imported", "display_name": "Imported", "visibility": "public",
           "resource_type_associations": [{"name": "OS::Nova::Flavor", "prefix": "imp:"}],
           "properties": {"speed": {"title": "Speed", "type": "string",
                                    "enum": ["slow", "fast"]}},
           "tags": [{"name": "imported"}]}
    (tmp_path / "ns.json").write_text(json.dumps(doc))
    imported = parse_table(ok(glance(node, "md-namespace-import", "--file",
                                     str(tmp_path / "ns.json"))))
    assert imported["namespace"] == "Test::Imported"
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
    assert files1["Test-Imported.json"]["properties"] == doc["properties"]
    # a bad directory is refused with the file named, nothing loaded
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text('{"namespace": "Bad", "visibility": "nope"}')
    refused = tessera("metadefs", "load", "--data-dir", str(fresh), str(bad))
    assert refused.returncode == 1 and "x.json" in refused.stderr
