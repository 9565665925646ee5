# End to end against a real node subprocess (tests/conftest.py): the application behind the
# real server, over real sockets -- headers the server adds, streaming both ways, and the
# trusted-headers mode configured from a TOML file. Kept few: the in-process tests cover
# the behaviour; these cover the wiring.
import hashlib
import http.client
import json
import os


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_lifecycle_over_sockets(tessera_server):
    s = tessera_server
    status, headers, body = request(s, "POST", "/v2/images",
                                    json.dumps({"name": "e2e", "disk_format": "raw",
                                                "container_format": "bare"}),
                                    {"Content-Type": "application/json"})
    assert status == 201
    iid = json.loads(body)["id"]
    assert headers["location"] == f"http://127.0.0.1:{s.port}/v2/images/{iid}"
    assert headers["x-openstack-request-id"].startswith("req-")
    data = os.urandom(3 << 20) + bytes(1 << 20)
    status, headers, _ = request(s, "PUT", f"/v2/images/{iid}/file", data,
                                 {"Content-Type": "application/octet-stream"})
    assert status == 204
    assert headers["content-type"] == "text/html; charset=UTF-8"
    assert headers["content-length"] == "0"
    status, headers, body = request(s, "GET", f"/v2/images/{iid}/file")
    assert status == 200 and body == data
    assert headers["content-length"] == str(len(data))
    assert headers["content-md5"] == hashlib.md5(data).hexdigest()
    status, headers, body = request(s, "GET", f"/v2/images/{iid}/file",
                                    headers={"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    assert headers["content-range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"
    status, headers, _ = request(s, "HEAD", f"/v2/images/{iid}/file")
    assert status == 405 and headers["allow"] == "GET, PUT"
    status, headers, body = request(s, "GET", "/")
    assert status == 300 and b'"v2.17", "status": "CURRENT"' in body
    status, _, _ = request(s, "DELETE", f"/v2/images/{iid}")
    assert status == 204
    status, _, body = request(s, "GET", f"/v2/images/{iid}", headers={"Accept": "*/*"})
    assert status == 404 and body.startswith(b"<html>")


def test_trusted_headers_mode_from_config(start_server, tmp_path):
    conf = tmp_path / "tessera.toml"
    conf.write_text('[api]\nauth = "trusted-headers"\n')
    s = start_server("--config", str(conf))
    status, _, _ = request(s, "GET", "/v2/images")
    assert status == 401
    ident = {"X-Identity-Status": "Confirmed", "X-Roles": "member,reader",
             "X-Project-Id": "p" * 32, "X-User-Id": "u"}
    status, _, body = request(s, "POST", "/v2/images", json.dumps({"name": "t"}),
                              {**ident, "Content-Type": "application/json"})
    assert status == 201 and json.loads(body)["owner"] == "p" * 32


def test_tokens_mode_without_a_usable_file_is_refused(tmp_path):
    import subprocess
    import sys
    conf = tmp_path / "tessera.toml"
    conf.write_text(f'[api]\nauth = "tokens"\ntokens_file = "{tmp_path / "missing.json"}"\n')
    proc = subprocess.run([sys.executable, "-m", "tessera", "serve", "--config", str(conf),
                           "--data-dir", str(tmp_path / "data"), "--bind", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cannot read tokens file" in proc.stderr and "Traceback" not in proc.stderr
