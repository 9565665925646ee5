# Interoperable import with the real clients against a real node (subprocess, sockets):
# glance image-stage / image-import / image-create-via-import (glance-direct and
# web-download) / image-tasks, and openstacksdk's stage + import calls. The web-download
# origin is a plain HTTP server on 127.0.0.1 that the node's config allows explicitly.
# Results are checked byte for byte.
from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("glanceclient")
_TESTS = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::Warning:openstack.*")]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


clients = _load("tessera_tests_client_support", _TESTS / "clients" / "conftest.py")
DATA = os.urandom(1_500_000) + bytes(200_000) + os.urandom(333_333)


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    root = tmp_path_factory.mktemp("origin")
    (root / "disk.img").write_bytes(DATA)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("imports-node")
    conf = base / "tessera.toml"
    conf.write_text('[import]\nallowed_hosts = ["127.0.0.1"]\nallowed_ports = []\n')
    server = _load("tessera_tests_root_support", _TESTS / "conftest.py").launch(
        base, "--config", str(conf))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "disk.img"
    path.write_bytes(DATA)
    return path


def glance(node, *args):
    proc = clients.run_tool(["glance", "--os-image-url", node.url, "--os-auth-token", "x",
                             *args])
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def wait_active(gc, image_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        img = gc.images.get(image_id)
        if img["status"] not in ("importing", "uploading", "queued") or \
                img.get("os_glance_failed_import"):
            return img
        time.sleep(0.05)
    raise AssertionError(f"image {image_id} did not settle: {img}")


def download(gc, image_id: str) -> bytes:
    return b"".join(gc.images.data(image_id))


@pytest.fixture(scope="module")
def gc(node):
    import glanceclient
    return glanceclient.Client("2", endpoint=node.url, token="x")


def test_cli_stage_then_import(node, gc, sample):
    created = clients.parse_table(glance(node, "image-create", "--name", "cli-gd",
                                         "--disk-format", "raw", "--container-format",
                                         "bare"))
    image_id = created["id"]
    glance(node, "image-stage", "--file", str(sample), image_id)
    assert gc.images.get(image_id)["status"] == "uploading"
    glance(node, "image-import", "--import-method", "glance-direct", image_id)
    img = wait_active(gc, image_id)
    assert img["status"] == "active"
    assert img["checksum"] == hashlib.md5(DATA).hexdigest()
    assert download(gc, image_id) == DATA
    # `glance image-tasks` needs API v2.12, which Glance (and tessera) advertise only with
    # multiple stores; the route itself answers
    import urllib.request
    with urllib.request.urlopen(f"{node.url}/v2/images/{image_id}/tasks") as resp:
        tasks = json.loads(resp.read())["tasks"]
    assert [(t["type"], t["status"]) for t in tasks] == [("api_image_import", "success")]


def test_cli_create_via_import_glance_direct_and_web_download(node, gc, sample, origin):
    out = glance(node, "image-create-via-import", "--name", "via-gd", "--disk-format", "raw",
                 "--container-format", "bare", "--import-method", "glance-direct",
                 "--file", str(sample))
    gd_id = clients.parse_table(out)["id"]
    out = glance(node, "image-create-via-import", "--name", "via-web", "--disk-format", "raw",
                 "--container-format", "bare", "--import-method", "web-download",
                 "--uri", f"{origin}/disk.img")
    web_id = clients.parse_table(out)["id"]
    for image_id in (gd_id, web_id):
        img = wait_active(gc, image_id)
        assert img["status"] == "active" and img["size"] == len(DATA)
        assert img["os_hash_value"] == hashlib.sha512(DATA).hexdigest()
        assert download(gc, image_id) == DATA


def test_library_import_info_and_refusal(node, gc, origin):
    from glanceclient import exc as gexc
    info = gc.images.get_import_info()
    assert info["import-methods"]["value"] == ["glance-direct", "web-download"]
    img = gc.images.create(name="refused", disk_format="raw", container_format="bare")
    with pytest.raises(gexc.HTTPBadRequest):
        gc.images.image_import(img["id"], "web-download",
                               uri="http://169.254.169.254/latest/meta-data")
    with pytest.raises(gexc.HTTPBadRequest):
        gc.images.image_import(img["id"], "web-download", uri="file:///etc/passwd")
    assert gc.images.get(img["id"])["status"] == "queued"
    gc.images.image_import(img["id"], "web-download", uri=f"{origin}/disk.img")
    assert wait_active(gc, img["id"])["status"] == "active"
    assert download(gc, img["id"]) == DATA


def test_openstacksdk_stage_and_import(node, sample):
    openstack = pytest.importorskip("openstack")
    conn = openstack.connect(auth_type="none", auth={"endpoint": node.url})
    image = conn.image.create_image(name="sdk-gd", disk_format="raw",
                                    container_format="bare")
    image.data = DATA
    conn.image.stage_image(image)
    conn.image.import_image(image, method="glance-direct")
    deadline = time.monotonic() + 30
    while conn.image.get_image(image.id).status != "active":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    got = conn.image.download_image(image.id)
    body = got.content if hasattr(got, "content") else got
    assert body == DATA
    assert json.loads(json.dumps(conn.image.get_import_info().import_methods))["value"] == [
        "glance-direct", "web-download"]
