# The metadefs catalog below the API: persistence across reopen, namespace files (load and
# export in Glance's file format, idempotent loading, round trip), the starter namespaces
# shipped as package data, and the validation rules on their own.
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tessera.engine import metadefs_rules as rules
from tessera.engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from tessera.engine.index import Index
from tessera.engine.metadefs import ADMIN, Metadefs, Viewer
from tessera.engine.metadefs_files import (STARTER_DIR, export_directory, file_name,
                                           load_directory, read_directory)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def index_path(tmp_path):
    return tmp_path / "index"


@pytest.fixture
def catalog(index_path):
    index = Index.open(index_path, map_size=1 << 24, durable=False)
    yield Metadefs(index)
    index.close()


def write_docs(path: Path, docs: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (path / f"{i:02d}.json").write_text(json.dumps(doc))
    return path


DOC = {"namespace": "Vendor::Disk", "display_name": "Disks",
       "description": "disk settings", "resource_type_associations": [
           {"name": "OS::Glance::Image", "prefix": "disk_"}],
       "properties": {"bus": {"title": "Bus", "type": "string", "enum": ["virtio", "ide"]}},
       "objects": [{"name": "Cache", "required": ["mode"], "properties": {
           "mode": {"title": "Mode", "type": "string"}}}],
       "tags": [{"name": "fast"}]}


async def test_catalog_survives_reopen(index_path):
    index = Index.open(index_path, map_size=1 << 24)
    await Metadefs(index).create_namespace(DOC, owner="p1")
    index.close()
    index = Index.open(index_path, map_size=1 << 24)
    try:
        detail = Metadefs(index).namespace_detail(ADMIN, "Vendor::Disk")
    finally:
        index.close()
    assert detail["owner"] == "p1" and list(detail["properties"]) == ["bus"]
    assert [o["name"] for o in detail["objects"]] == ["Cache"]


async def test_visibility_is_the_database_rule(catalog):
    await catalog.create_namespace({"namespace": "Priv", "owner": "p1"}, owner=None)
    await catalog.create_namespace({"namespace": "Pub", "visibility": "public",
                                    "owner": "p1"}, owner=None)
    await catalog.create_namespace({"namespace": "Unowned"}, owner=None)
    other = Viewer(is_admin=False, project_id="p2")
    assert [n["namespace"] for n in catalog.list_namespaces(other, sort_key="namespace",
                                                            sort_dir="asc")] == ["Pub",
                                                                                 "Unowned"]
    with pytest.raises(NotFound):
        catalog.get_namespace(other, "Priv")
    with pytest.raises(NotFound):
        await catalog.delete_namespace(other, "Priv")
    assert catalog.get_namespace(Viewer(False, "p1"), "Priv")["owner"] == "p1"


async def test_rename_keeps_contents_and_protection_blocks_deletes(catalog):
    await catalog.create_namespace({**DOC, "protected": True}, owner="p1")
    await catalog.update_namespace(ADMIN, "Vendor::Disk", {"namespace": "Vendor::Disks",
                                                           "protected": True}, owner=None)
    assert catalog.list_tags(ADMIN, "Vendor::Disks")[0]["name"] == "fast"
    with pytest.raises(Forbidden):
        await catalog.delete_tag(ADMIN, "Vendor::Disks", "fast")
    with pytest.raises(Forbidden):
        await catalog.delete_namespace(ADMIN, "Vendor::Disks")
    with pytest.raises(NotFound):
        catalog.list_tags(ADMIN, "Vendor::Disk")


async def test_failed_create_leaves_nothing(catalog):
    bad = {**DOC, "tags": [{"name": "a"}, {"name": "A"}]}
    with pytest.raises(Conflict):
        await catalog.create_namespace(bad, owner=None)
    assert catalog.list_namespaces(ADMIN) == []
    assert catalog.list_resource_types() == []       # the association's type was not kept


async def test_load_is_idempotent_and_replaces_changed_documents(catalog, tmp_path):
    src = write_docs(tmp_path / "src", [DOC, {"namespace": "Vendor::Other"}])
    first = await load_directory(catalog, src)
    assert sorted(first["created"]) == ["Vendor::Disk", "Vendor::Other"]
    created_at = catalog.get_namespace(ADMIN, "Vendor::Disk")["created_at"]
    again = await load_directory(catalog, src)
    assert again == {"created": [], "replaced": [],
                     "unchanged": ["Vendor::Disk", "Vendor::Other"]}
    changed = {**DOC, "tags": [{"name": "slow"}], "properties": {}}
    write_docs(src, [changed])
    third = await load_directory(catalog, src)
    assert third["replaced"] == ["Vendor::Disk"]
    detail = catalog.namespace_detail(ADMIN, "Vendor::Disk")
    assert [t["name"] for t in detail["tags"]] == ["slow"] and detail["properties"] == {}
    assert detail["created_at"] == created_at           # replaced in place
    # Glance's file defaults: public, protected; no owner in the file: unowned
    assert (detail["visibility"], detail["protected"], detail["owner"]) == ("public", True,
                                                                           None)


async def test_export_round_trip(catalog, tmp_path):
    await load_directory(catalog, write_docs(tmp_path / "src", [DOC]))
    await catalog.create_namespace({"namespace": "Made::Here", "visibility": "private",
                                    "properties": {"x": {"title": "X", "type": "integer",
                                                         "minimum": 0}}}, owner="p7")
    written = export_directory(catalog, tmp_path / "out")
    assert sorted(p.name for p in written) == ["Made-Here.json", "Vendor-Disk.json"]
    exported = json.loads((tmp_path / "out" / "Vendor-Disk.json").read_text())
    assert exported["properties"] == DOC["properties"]
    assert exported["resource_type_associations"] == DOC["resource_type_associations"]
    # loading the export into a fresh catalog gives the same documents back
    index = Index.open(tmp_path / "other", map_size=1 << 24, durable=False)
    try:
        fresh = Metadefs(index)
        outcome = await load_directory(fresh, tmp_path / "out")
        assert sorted(outcome["created"]) == ["Made::Here", "Vendor::Disk"]
        assert fresh.export_documents() == catalog.export_documents()
        again = await load_directory(fresh, tmp_path / "out")
        assert len(again["unchanged"]) == 2
    finally:
        index.close()


def test_bad_directories_are_refused_whole(tmp_path):
    with pytest.raises(InvalidInput, match="not a directory"):
        read_directory(tmp_path / "missing")
    src = write_docs(tmp_path / "src", [DOC])
    (src / "zz.json").write_text("{broken")
    with pytest.raises(InvalidInput, match="zz.json: not a readable JSON document"):
        read_directory(src)
    (src / "zz.json").write_text(json.dumps({"namespace": "N", "visibility": "everyone"}))
    with pytest.raises(InvalidInput, match="zz.json: .*'everyone' is not one of"):
        read_directory(src)
    (src / "zz.json").write_text(json.dumps(DOC))
    with pytest.raises(InvalidInput, match="also defined in"):
        read_directory(src)


def test_file_names_are_portable():
    assert file_name("OS::Compute::Libvirt") == "OS-Compute-Libvirt.json"
    assert file_name("a/b c") == "a-b-c.json"
    assert file_name("::") == "namespace.json"


async def test_starter_namespaces_load(catalog):
    docs = read_directory(STARTER_DIR)
    assert len(docs) >= 3
    outcome = await load_directory(catalog, STARTER_DIR)
    assert len(outcome["created"]) == len(docs)
    boot = catalog.namespace_detail(ADMIN, "Tessera::Image::Boot")
    assert boot["protected"] and boot["visibility"] == "public"
    assert {a["name"] for a in boot["resource_type_associations"]} >= {"OS::Glance::Image"}
    for _, doc in docs:
        assert doc["namespace"].startswith("Tessera::")


def test_starter_namespaces_ship_in_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["tessera.engine"]
    shipped = {p for g in globs for p in (ROOT / "engine").glob(g)}
    assert set(STARTER_DIR.glob("*.json")) <= shipped
    assert STARTER_DIR == ROOT / "engine" / "metadefs_data"


def test_rules_normal_form_and_messages():
    prop = {"enum": ["a"], "title": "T", "type": "string", "required": ["x"], "confidential": True,
            "items": None}
    assert list(rules.normal_property(prop)) == ["type", "title", "enum", "confidential"]
    with pytest.raises(InvalidInput) as exc:
        rules.validate("property", {"name": "n", "title": "t", "type": "array",
                                    "items": {"type": "str"}})
    assert "'str' is not one of" in exc.value.message
    assert "instance['items']['type']" in exc.value.message
    with pytest.raises(InvalidInput, match="minLength 5 is greater than maxLength 2"):
        rules.validate("property", {"name": "n", "title": "t", "type": "string",
                                    "minLength": 5, "maxLength": 2})
    with pytest.raises(InvalidInput, match="should be non-empty"):
        rules.validate("property", {"name": "n", "title": "t", "type": "string",
                                    "required": []})
    rules.validate("property", {"title": "t", "type": "string"}, require_name=False)
    with pytest.raises(InvalidInput, match="True is not of type 'integer'"):
        rules.validate("property", {"name": "n", "title": "t", "type": "string",
                                    "maxLength": True})
