# The request observer's direct increments (tessera.http.metrics): the exposition is the one
# prometheus_client's own Counter.inc / Histogram.observe produce for the same requests.
from __future__ import annotations

from prometheus_client.exposition import generate_latest

from tessera.http.metrics import NodeMetrics

REQUESTS = [("GET", "/v2/images/{image_id}", 200, 1234, 0, s)
            for s in (0.0, 0.0003, 0.001, 0.0025, 0.0026, 0.05, 1.0, 300.0, 1000.0)] + [
    ("PUT", "/v2/images/{image_id}/file", 204, 0, 1 << 20, 0.5),
    ("GET", "/v2/images/{image_id}/file", 200, 1 << 21, 0, 0.25),
    ("BREW", "", 404, 10, 0, 0.002),
    ("GET", "/v2/images", 200, 0, 0, 0.004),
]


def exposition(metrics: NodeMetrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_direct_increments_expose_what_the_public_methods_do():
    direct, public = NodeMetrics(), NodeMetrics()
    for args in REQUESTS:
        direct.observe(*args)
        public.observe(*args)
        for key, children in public._children.items():     # this one: the public methods
            public._children[key] = (*children[:4], None)
    assert all(children[4] is not None for children in direct._children.values())
    assert exposition(direct) == exposition(public)
    text = "\n".join(exposition(direct))
    assert 'tessera_http_requests_total{method="GET",route="/v2/images/{image_id}",' \
           'status="200"} 9.0' in text
    assert 'le="0.001",method="GET",route="/v2/images/{image_id}",status="200"} 3.0' in text
    assert 'method="OTHER",route="unmatched"' in text
