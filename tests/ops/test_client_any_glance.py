# The client against a plainer Glance than tessera: a server (the standard library's
# http.server, on 127.0.0.1) that requires X-Auth-Token, pages image lists through `next`
# links and ignores Range. Parallel and resumed downloads fall back to one stream from
# offset 0 and still end byte-identical and verified.
from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tessera.client.api import BLOCK, Client, ClientError, Endpoint
from tessera.client.download import DownloadError, Span, _State, download

TOKEN = "s3cret"
DATA = os.urandom(3 * BLOCK + 777)
IMAGES = [{"id": f"00000000-0000-4000-8000-00000000000{i}", "name": f"img{i}",
           "status": "active", "size": len(DATA), "disk_format": "raw",
           "visibility": "public", "checksum": hashlib.md5(DATA).hexdigest(),
           "os_hash_algo": "sha512", "os_hash_value": hashlib.sha512(DATA).hexdigest()}
          for i in range(3)]
# A record whose hash the data does not match (bit rot, a lying mirror).
BAD = {**IMAGES[0], "id": "00000000-0000-4000-8000-0000000000bd", "os_hash_value": "0" * 128}


class PlainGlance(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gets: list[tuple[str, str | None]] = []

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.headers.get("X-Auth-Token") != TOKEN:
            return self._send(401, b'{"message": "The request you have made requires '
                                   b'authentication."}')
        path = self.path
        type(self).gets.append((path, self.headers.get("Range")))
        if path.startswith("/v2/images?"):
            marker = path.split("marker=")[1] if "marker=" in path else None
            start = 0 if marker is None else [im["id"] for im in IMAGES].index(marker) + 1
            page = IMAGES[start:start + 2]
            doc = {"images": page}
            if start + 2 < len(IMAGES):
                doc["next"] = f"/v2/images?limit=2&marker={page[-1]['id']}"
            return self._send(200, json.dumps(doc).encode())
        for im in [*IMAGES, BAD]:
            if path == f"/v2/images/{im['id']}":
                return self._send(200, json.dumps(im).encode())
            if path == f"/v2/images/{im['id']}/file":          # Range ignored: always 200
                return self._send(200, DATA, "application/octet-stream")
        self._send(404, b'{"message": "not found"}')


@pytest.fixture
def glance():
    PlainGlance.gets = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), PlainGlance)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_list_follows_next_links_with_a_token(glance):
    client = Client(Endpoint(glance, TOKEN))
    assert [im["name"] for im in client.list_images(page_size=2)] == ["img0", "img1", "img2"]
    with pytest.raises(ClientError) as err:
        list(Client(Endpoint(glance)).list_images())
    assert err.value.status == 401 and "requires authentication" in str(err.value)


def test_parallel_download_without_range_support(glance, tmp_path):
    out = tmp_path / "img.raw"
    download(Client(Endpoint(glance, TOKEN)), IMAGES[0]["id"], out, parallel=3)
    assert out.read_bytes() == DATA
    assert not (tmp_path / "img.raw.part.json").exists()


def test_resume_without_range_support_starts_over(glance, tmp_path):
    out = tmp_path / "img.raw"
    part = tmp_path / "img.raw.part"
    with open(part, "wb") as f:
        f.truncate(len(DATA))
        f.write(DATA[:BLOCK])
    _State(tmp_path / "img.raw.part.json", IMAGES[1], [Span(0, len(DATA), BLOCK)]).save()
    download(Client(Endpoint(glance, TOKEN)), IMAGES[1]["id"], out)
    assert out.read_bytes() == DATA
    file_gets = [r for p, r in PlainGlance.gets if p.endswith("/file")]
    assert file_gets == [f"bytes={BLOCK}-"]          # asked to resume, got the whole image


@pytest.mark.parametrize("parallel", [1, 3])
def test_a_hash_mismatch_is_an_error_and_leaves_nothing(glance, tmp_path, parallel):
    out = tmp_path / "bad.raw"
    with pytest.raises(DownloadError, match="sha512 of the downloaded bytes"):
        download(Client(Endpoint(glance, TOKEN)), BAD["id"], out, parallel=parallel)
    assert list(tmp_path.iterdir()) == []
