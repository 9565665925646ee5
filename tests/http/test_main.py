# Running a real node as a subprocess: readiness line, health check, SIGTERM exits 0, and the
# refusal to serve noauth on a non-loopback address.
import http.client
import subprocess
import sys

from tessera.http.main import is_loopback


def test_node_serves_and_stops_cleanly(tessera_server):
    conn = http.client.HTTPConnection("127.0.0.1", tessera_server.port, timeout=10)
    conn.request("GET", "/healthcheck")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b"OK"
    assert resp.getheader("x-openstack-request-id").startswith("req-")
    conn.close()
    assert tessera_server.stop() == 0
    log = tessera_server.log()
    assert f"tessera: serving on http://127.0.0.1:{tessera_server.port}" in log
    assert '"GET /healthcheck" 200 2 ' in log           # the access log line


def test_noauth_on_public_address_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tessera", "serve", "--data-dir",
                           str(tmp_path / "d"), "--bind", "0.0.0.0:0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "noauth" in proc.stderr and "allow_insecure_noauth" in proc.stderr


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.9.9.9")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.com")
