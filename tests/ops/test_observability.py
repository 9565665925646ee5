# Operators' view of a node: /metrics after real traffic, /healthcheck's disable file,
# systemd readiness over a real unix datagram socket, JSON access logs whose request ids
# follow the work a request causes.
from __future__ import annotations

import http.client
import io
import json
import logging
import os
import socket

import trio

from tessera import logs
from tessera.http.config import ServerConfig
from tessera.http.message import Response
from tessera.http.metrics import NodeMetrics, exposure
from tessera.http.server import serve


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
    finally:
        conn.close()


def create_and_upload(port: int, data: bytes) -> str:
    status, _, body = request(port, "POST", "/v2/images",
                              json.dumps({"name": "m", "disk_format": "raw",
                                          "container_format": "bare"}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 201
    image_id = json.loads(body)["id"]
    status, _, _ = request(port, "PUT", f"/v2/images/{image_id}/file", data,
                           {"Content-Type": "application/octet-stream"})
    assert status == 204
    return image_id


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head == name and not labels:
            return float(value)
        if head.startswith(name + "{") and all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


def test_metrics_after_traffic(start_server):
    node = start_server()
    data = os.urandom(1 << 20) * 4          # repeats: dedup ratio well above 1
    image_id = create_and_upload(node.port, data)
    status, _, body = request(node.port, "GET", f"/v2/images/{image_id}/file")
    assert status == 200 and body == data
    assert request(node.port, "GET", "/v2/images/nope")[0] == 404
    status, headers, text = request(node.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = text.decode()
    route = "/v2/images/{image_id}/file"
    assert sample(text, "tessera_http_requests_total", method="PUT", route=route,
                  status="204") == 1
    assert sample(text, "tessera_http_requests_total", method="GET", route=route,
                  status="200") == 1
    assert sample(text, "tessera_http_requests_total", method="GET",
                  route="/v2/images/{image_id}", status="404") == 1
    assert sample(text, "tessera_http_received_bytes_total", route=route) == len(data)
    assert sample(text, "tessera_http_sent_bytes_total", route=route) == len(data)
    assert sample(text, "tessera_http_request_duration_seconds_count", method="PUT",
                  route=route, status="204") == 1
    assert sample(text, "tessera_image_transfer_bytes_per_second_count",
                  direction="upload") == 1
    assert sample(text, "tessera_image_transfer_bytes_per_second_count",
                  direction="download") == 1
    assert sample(text, "tessera_logical_bytes") == len(data)
    stored = sample(text, "tessera_stored_bytes")
    assert stored is not None and 0 < stored < len(data)
    assert sample(text, "tessera_dedup_ratio") > 1.0
    assert sample(text, "tessera_cache_bytes") is not None


def test_metrics_exposure_policy():
    assert exposure("auto", "127.0.0.1", "noauth") == "public"
    assert exposure("auto", "0.0.0.0", "noauth") == "off"
    assert exposure("auto", "10.1.2.3", "tokens") == "admin"
    assert exposure("admin", "127.0.0.1", "noauth") == "off"
    assert exposure("public", "0.0.0.0", "tokens") == "public"
    assert exposure("off", "127.0.0.1", "noauth") == "off"


def test_metrics_off_is_an_unknown_path(start_server, tmp_path):
    """Off, /metrics is just another unversioned path: Glance's 300 versions document."""
    conf = tmp_path / "off.toml"
    conf.write_text('[api]\nmetrics = "off"\n')
    node = start_server("--config", str(conf))
    status, _, body = request(node.port, "GET", "/metrics")
    assert status == 300 and b"tessera_http" not in body and b"versions" in body


def test_metrics_sources_hook():
    metrics = NodeMetrics(None)
    metrics.add_source(lambda: {"tessera_peer_up": ("Peer reachable", {("n2",): 1.0},
                                                    ("peer",))})
    text = metrics.render().body.decode()
    assert sample(text, "tessera_peer_up", peer="n2") == 1.0


def test_healthcheck_disable_by_file(start_server, tmp_path):
    flag = tmp_path / "healthcheck_disable"
    conf = tmp_path / "hc.toml"
    conf.write_text(f'[api]\nhealthcheck_disable_file = "{flag}"\n')
    node = start_server("--config", str(conf))
    assert request(node.port, "GET", "/healthcheck")[:3:2] == (200, b"OK")
    flag.touch()
    status, _, body = request(node.port, "GET", "/healthcheck")
    assert (status, body) == (503, b"DISABLED BY FILE")
    status, _, body = request(node.port, "GET", "/healthcheck",
                              headers={"Accept": "application/json"})
    assert status == 503 and json.loads(body)["reasons"] == ["DISABLED BY FILE"]
    assert request(node.port, "HEAD", "/healthcheck")[0] == 503
    flag.unlink()
    assert request(node.port, "GET", "/healthcheck")[0] == 200


def test_systemd_readiness(start_server, tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        node = start_server()
        ready = sock.recv(4096).decode().split("\n")
        assert "READY=1" in ready
        assert f"STATUS=serving on http://127.0.0.1:{node.port}" in ready
        assert node.stop() == 0
        assert "STOPPING=1" in sock.recv(4096).decode().split("\n")


def test_json_access_log(start_server):
    node = start_server("--log-format", "json")
    image_id = create_and_upload(node.port, b"x" * 1000)
    _, headers, _ = request(node.port, "GET", f"/v2/images/{image_id}")
    rid = headers["x-openstack-request-id"]
    assert node.stop() == 0
    lines = [json.loads(line) for line in node.log().splitlines() if line.startswith("{")]
    access = [d for d in lines if d["logger"] == "tessera.access"]
    mine = [d for d in access if d["request_id"] == rid]
    assert len(mine) == 1
    line = mine[0]
    assert line["method"] == "GET" and line["route"] == "/v2/images/{image_id}"
    assert line["status"] == 200 and line["bytes"] > 0 and line["duration_ms"] >= 0
    put = [d for d in access if d["method"] == "PUT"][0]
    assert put["bytes_in"] == 1000 and put["status"] == 204


async def test_request_id_follows_the_work(nursery):
    """A line logged by a worker thread the handler started carries the request's id."""
    out = io.StringIO()
    worker_log = logging.getLogger("tessera.test.worker")

    async def app(req):
        await trio.to_thread.run_sync(worker_log.warning, "working for the request")
        return Response(200, [], b"done")

    logs.setup_logging(logs.LogConfig(format="json"), stream=out)
    try:
        host, port = await nursery.start(serve, app, ServerConfig(host="127.0.0.1", port=0))
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(b"GET /x HTTP/1.1\r\nHost: t\r\n"
                              b"X-Openstack-Request-Id: req-11111111-2222-4333-8444-555555555555"
                              b"\r\n\r\n")
        got = b""
        while b"done" not in got:
            got += await stream.receive_some(4096)
        await stream.aclose()
    finally:
        logs.setup_logging(logs.LogConfig(), stream=io.StringIO())
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_tessera", False)]:
            root.removeHandler(h)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    work = [d for d in docs if d["logger"] == "tessera.test.worker"]
    assert work and work[0]["request_id"] == "req-11111111-2222-4333-8444-555555555555"
    access = [d for d in docs if d["logger"] == "tessera.access"]
    assert access[0]["request_id"] == work[0]["request_id"] and access[0]["status"] == 200


async def test_an_attached_service_feeds_metrics(tmp_path):
    """The cluster hook: what `attach` reports as started may bring a metrics_source."""
    from tessera.engine.config import EngineConfig
    from tessera.engine.engine import Engine
    from tessera.http.main import _background

    class Service:
        def metrics_source(self):
            return {"tessera_peer_up": ("Peer answers", {("n2",): 1.0, ("n3",): 0.0},
                                        ("peer",)),
                    "tessera_repair_backlog": ("Chunks under-replicated", 7, ())}

    async def attach(engine, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started(Service())
        await trio.sleep_forever()

    engine = await Engine.open(EngineConfig(data_dir=tmp_path, durable=False))
    try:
        metrics = NodeMetrics(engine)
        async with _background(engine, attach, metrics):
            text = (await metrics.scrape()).body.decode()
    finally:
        await engine.aclose()
    assert sample(text, "tessera_peer_up", peer="n3") == 0.0
    assert sample(text, "tessera_repair_backlog") == 7
    assert sample(text, "tessera_images") == 0


async def test_request_id_follows_a_background_job(nursery):
    """An import job submitted while serving a request logs with that request's id."""
    from tessera.engine.background import Background

    class Capture(logging.Handler):
        def emit(self, record):
            got.append(record.request_id)

    got: list[str] = []
    handler = Capture()
    handler.addFilter(logs.RequestIdFilter())
    job_log = logging.getLogger("tessera.test.job")
    job_log.addHandler(handler)
    bg = Background()
    await nursery.start(bg.run)
    done = trio.Event()

    async def job():
        await trio.sleep(0)
        job_log.warning("job step")
        done.set()

    try:
        token = logs.request_id.set("req-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
        bg.submit(job)
        logs.request_id.reset(token)
        job_log.warning("after the request")
        await done.wait()
    finally:
        job_log.removeHandler(handler)
    assert got == ["", "req-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"]


def test_metric_labels_stay_bounded():
    metrics = NodeMetrics(None)
    for i in range(50):
        metrics.observe(f"BREW{i}", "", 501, 0, 0, 0.001)
        metrics.observe("GET", "", 404, 10, 0, 0.001)
    text = metrics.render().body.decode()
    assert sample(text, "tessera_http_requests_total", method="OTHER", route="unmatched",
                  status="501") == 50
    assert "BREW" not in text and len(metrics._children) == 2
