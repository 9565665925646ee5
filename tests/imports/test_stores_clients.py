# Multi-store and the cache API with the real glance CLI against a real node configured with
# two local stores and the cache on: stores-info, image-upload --store,
# image-create-via-import --stores, copy-image, stores-delete, image-tasks, cache-queue /
# cache-list / cache-prune / cache-clean / cache-clear / cache-delete. Byte-identical data.
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("glanceclient")
_TESTS = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


clients = _load("tessera_tests_client_support", _TESTS / "clients" / "conftest.py")
DATA = os.urandom(1_200_000)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("stores-node")
    conf = base / "tessera.toml"
    conf.write_text(f"""
[engine]
image_cache = true
prefetch_interval = 0.2

[[stores]]
id = "fast"
description = "Fast store"
default = true

[[stores]]
id = "cheap"
description = "Cheap store"
path = "{base / 'cheap'}"
""")
    server = _load("tessera_tests_root_support", _TESTS / "conftest.py").launch(
        base, "--config", str(conf))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "disk.img"
    path.write_bytes(DATA)
    return path


@pytest.fixture(scope="module")
def gc(node):
    import glanceclient
    return glanceclient.Client("2", endpoint=node.url, token="x")


def glance(node, *args):
    proc = clients.run_tool(["glance", "--os-image-url", node.url, "--os-auth-token", "x",
                             *args])
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def settle(gc, image_id: str, want: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        img = gc.images.get(image_id)
        if img.get("stores") == want and "os_glance_import_task" not in img:
            return img
        time.sleep(0.05)
    raise AssertionError(f"{image_id}: stores {img.get('stores')!r}, wanted {want!r}")


def test_stores_with_the_glance_cli(node, gc, sample):
    out = glance(node, "stores-info")
    assert "fast" in out and "cheap" in out
    # upload into the non-default store, copy it into the default one, drop the original
    created = clients.parse_table(glance(node, "image-create", "--name", "up", "--disk-format",
                                         "raw", "--container-format", "bare"))
    image_id = created["id"]
    glance(node, "image-upload", "--store", "cheap", "--file", str(sample), image_id)
    assert gc.images.get(image_id)["stores"] == "cheap"
    glance(node, "image-import", "--import-method", "copy-image", "--stores", "fast", image_id)
    settle(gc, image_id, "cheap,fast")
    glance(node, "stores-delete", "--store", "cheap", image_id)
    assert gc.images.get(image_id)["stores"] == "fast"
    assert b"".join(gc.images.data(image_id)) == DATA
    out = glance(node, "image-tasks", image_id)       # v2.12 is advertised with stores
    assert "Copied 1 MiB" in out and "success" in out
    # glance-direct into both stores at once
    out = glance(node, "image-create-via-import", "--name", "both", "--disk-format", "raw",
                 "--container-format", "bare", "--import-method", "glance-direct",
                 "--file", str(sample), "--stores", "fast,cheap")
    both = clients.parse_table(out)["id"]
    img = settle(gc, both, "fast,cheap")
    assert img["status"] == "active" and b"".join(gc.images.data(both)) == DATA


def test_cache_with_the_glance_cli(node, gc):
    img = gc.images.create(name="cached", disk_format="raw", container_format="bare")
    import io
    gc.images.upload(img["id"], io.BytesIO(DATA), image_size=len(DATA))
    glance(node, "cache-queue", img["id"])
    deadline = time.monotonic() + 30
    while True:
        listing = gc.cache.list()
        if [c["image_id"] for c in listing["cached_images"]] == [img["id"]]:
            break
        assert time.monotonic() < deadline, listing
        time.sleep(0.05)
    assert b"".join(gc.images.data(img["id"])) == DATA        # a hit
    out = glance(node, "cache-list")
    assert img["id"] in out
    assert gc.cache.list()["cached_images"][0]["hits"] == 1
    out = glance(node, "cache-prune")                          # under the 10 GiB budget
    assert "Pruned 0 file(s), 0 byte(s)." in out
    glance(node, "cache-clean")
    glance(node, "cache-delete", img["id"])
    assert gc.cache.list() == {"cached_images": [], "queued_images": []}
    glance(node, "cache-queue", img["id"])
    glance(node, "cache-clear")
    assert gc.cache.list()["queued_images"] == []
