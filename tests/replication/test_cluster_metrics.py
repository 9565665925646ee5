# GET /metrics of a cluster node shows the replication gauges: peer health, repair backlog,
# under-replicated chunks, anti-entropy rounds and lag, bytes repaired, hint queues.
from __future__ import annotations

import os
import time

from prometheus_client.parser import text_string_to_metric_families


def scrape(node) -> dict[tuple[str, tuple], float]:
    status, body = node.request("GET", "/metrics")
    assert status == 200, body
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode())
            for s in fam.samples}


def wait_for(node, check, what: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(node)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {sorted(k for k in samples if 'cluster' in k[0])}")
        time.sleep(0.1)


def up(samples, peer):
    return samples.get(("tessera_cluster_peer_up", (("peer", peer),)))


def test_metrics_show_peer_health_backlog_and_lag(cluster):
    a, b, c = cluster
    image_id = a.create(name="m")
    data = os.urandom(1 << 20)
    assert a.upload(image_id, data) == 204

    s = wait_for(a, lambda s: up(s, "b") == 1 and up(s, "c") == 1
                 and s.get(("tessera_cluster_antientropy_rounds", ()), 0) >= 1
                 and ("tessera_cluster_under_replicated_chunks", ()) in s,
                 "peers up after a round")
    assert s[("tessera_cluster_peers", ())] == 2
    for peer in ("b", "c"):
        assert 0 <= s[("tessera_cluster_peer_last_contact_age_seconds", (("peer", peer),))] < 10
        assert s[("tessera_cluster_hints", (("peer", peer),))] == 0
    assert 0 <= s[("tessera_cluster_antientropy_last_round_age_seconds", ())] < 10
    assert s[("tessera_cluster_under_replicated_chunks", ())] == 0
    assert s[("tessera_cluster_repair_backlog", ())] == 0
    assert s[("tessera_cluster_bytes_repaired", ())] >= 0
    assert s[("tessera_cluster_peer_sent_bytes", ())] > len(data)     # the upload went out

    c.kill()                                       # by its pid (SIGKILL)
    s = wait_for(a, lambda s: up(s, "c") == 0, "c down after SIGKILL")
    assert up(s, "b") == 1
    # a write while c is down leaves a hint for c: the handoff queue shows it
    image2 = a.create(name="m2")
    s = wait_for(a, lambda s: s.get(("tessera_cluster_hints", (("peer", "c"),)), 0) >= 1,
                 "hint queued for c")
    assert s[("tessera_cluster_repair_backlog", ())] >= 1
    assert image2
