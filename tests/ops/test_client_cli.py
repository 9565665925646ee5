# The people's client against a real node: upload with a progress bar, list, download
# (sequential, parallel ranges, resumed from a partial download) byte for byte, and the
# end-of-download hash check; `tessera status` of the node and of a data directory.
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tessera.client.api import BLOCK, Client, Endpoint
from tessera.client.download import DownloadError, Span, _State, download, split

SIZE = 5 * BLOCK + 12345


def tessera(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tessera", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def node(start_server):
    return start_server("--log-format", "json")


@pytest.fixture
def image_file(tmp_path):
    block = os.urandom(BLOCK)
    data = block + os.urandom(2 * BLOCK) + block + os.urandom(SIZE - 4 * BLOCK)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    return path


def upload(node, path) -> str:
    proc = tessera("image", "upload", str(path), "--name", "my disk", "--url", node.url,
                   "--progress")
    assert proc.returncode == 0, proc.stderr
    image_id, status, size = proc.stdout.split()[:3]
    assert status == "active" and int(size) == path.stat().st_size
    assert "upload [" in proc.stderr and "100.0%" in proc.stderr and "ETA" in proc.stderr
    return image_id


def file_gets(node, image_id):
    """(status, bytes) of each GET .../file the node's JSON access log recorded."""
    out = []
    for line in node.log().splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if doc.get("logger") == "tessera.access" and doc.get("method") == "GET" and \
                    doc.get("target") == f"/v2/images/{image_id}/file":
                out.append((doc["status"], doc["bytes"]))
    return out


def test_upload_list_download(node, image_file, tmp_path):
    image_id = upload(node, image_file)
    proc = tessera("image", "list", "--url", node.url)
    assert proc.returncode == 0 and image_id in proc.stdout and "my disk" in proc.stdout
    assert proc.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]
    listed = json.loads(tessera("image", "list", "--url", node.url, "--json").stdout)
    assert [im["id"] for im in listed] == [image_id]

    out = tmp_path / "out.img"
    proc = tessera("image", "download", image_id, "-o", str(out), "--url", node.url,
                   "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "sha512 verified" in proc.stdout and "download [" in proc.stderr
    assert out.read_bytes() == image_file.read_bytes()
    assert not out.with_name("out.img.part").exists()

    par = tmp_path / "parallel.img"
    proc = tessera("image", "download", image_id, "-o", str(par), "--url", node.url,
                   "--parallel", "4", "--quiet")
    assert proc.returncode == 0, proc.stderr and proc.stderr == ""
    assert par.read_bytes() == image_file.read_bytes()
    node.stop()
    gets = file_gets(node, image_id)
    assert gets[0] == (200, SIZE)
    ranged = gets[1:]
    assert len(ranged) == 4 and all(status == 206 for status, _ in ranged)
    assert sum(n for _, n in ranged) == SIZE


def test_resume_fetches_only_the_missing_bytes(node, image_file, tmp_path):
    image_id = upload(node, image_file)
    client = Client(Endpoint(node.url))
    image = client.get_image(image_id)
    data = image_file.read_bytes()
    out = tmp_path / "resumed.img"
    part = out.with_name("resumed.img.part")
    # What an interrupted 2-range download leaves: range 1 half done, range 2 untouched.
    spans = split(SIZE, 2)
    done = 3 * BLOCK // 2
    with open(part, "wb") as f:
        f.truncate(SIZE)
        f.write(data[:done])
    spans[0].done = done
    _State(out.with_name("resumed.img.part.json"), image, spans).save()

    proc = tessera("image", "download", image_id, "-o", str(out), "--url", node.url)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == data
    node.stop()
    assert sorted(file_gets(node, image_id)) == sorted(
        [(206, spans[0].end - done), (206, spans[1].end - spans[1].start)])


def test_a_bad_partial_download_is_caught_by_the_hash(node, image_file, tmp_path):
    image_id = upload(node, image_file)
    client = Client(Endpoint(node.url))
    image = client.get_image(image_id)
    out = tmp_path / "bad.img"
    part = out.with_name("bad.img.part")
    with open(part, "wb") as f:
        f.truncate(SIZE)
        f.write(b"\x01" * BLOCK)         # not the image's first bytes
    _State(out.with_name("bad.img.part.json"), image, [Span(0, SIZE, BLOCK)]).save()
    with pytest.raises(DownloadError, match="sha512 of the downloaded bytes"):
        download(client, image_id, out)
    assert not out.exists() and not part.exists()
    download(client, image_id, out)      # starts over and succeeds
    assert hashlib.sha512(out.read_bytes()).hexdigest() == image["os_hash_value"]


def test_download_errors_are_reported(node, tmp_path):
    proc = tessera("image", "download", "00000000-0000-4000-8000-000000000000", "-o",
                   str(tmp_path / "x"), "--url", node.url)
    assert proc.returncode == 1 and "404" in proc.stderr


def test_status_of_a_node_and_of_a_data_dir(node, image_file):
    upload(node, image_file)
    proc = tessera("status", "--url", node.url)
    assert proc.returncode == 0, proc.stderr
    assert "images      1" in proc.stdout and "dedup ratio" in proc.stdout
    assert "(OK)" in proc.stdout and "requests" in proc.stdout
    doc = json.loads(tessera("status", "--url", node.url, "--json").stdout)
    assert doc["storage"]["images"] == 1 and doc["storage"]["logical_bytes"] == SIZE
    assert doc["storage"]["stored_bytes"] < SIZE and doc["dedup_ratio"] > 1
    assert doc["requests"]["total"] >= 3 and doc["health"] == "OK"
    node.stop()
    doc = json.loads(tessera("status", "--data-dir", str(node.data_dir), "--json").stdout)
    assert doc["storage"]["images"] == 1 and doc["storage"]["logical_bytes"] == SIZE
    text = tessera("status", "--data-dir", str(node.data_dir)).stdout
    assert "stored" in text and "segments" in text


def test_status_renders_processes_for_people():
    from tessera.client.status import render

    doc = {"source": "http://n", "health": "OK", "storage": {"images": 2},
           "processes": {"reaper": {"rounds": 12, "failures": 1, "interval": 600,
                                    "last_round": 1000.0, "evicted_bytes": 3 * 2 ** 30,
                                    "pending": 0}}}
    text = render(doc, now=1180.0)
    assert "process     reaper  12 rounds, 1 failures, every 600s, last 03:00 ago; " \
           "evicted bytes 3.0 GiB" in text
    assert "pending" not in text


def test_a_refused_upload_names_the_image_left_behind(start_server, tmp_path):
    conf = tmp_path / "cap.toml"
    conf.write_text("[engine]\nimage_size_cap = 1000\n")
    node = start_server("--config", str(conf))
    big = tmp_path / "big.img"
    big.write_bytes(os.urandom(5000))
    proc = tessera("image", "upload", str(big), "--url", node.url)
    assert proc.returncode == 1 and "413" in proc.stderr
    assert "was created and has no data" in proc.stderr
