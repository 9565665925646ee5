# The replication gauges a node shows on GET /metrics: peer health (up, age of the last
# successful contact), repair backlog, under-replicated chunks, anti-entropy rounds and
# the age of the last one (replication lag), bytes repaired, hinted-handoff queue length.
# Invariants: the doc has the shape the HTTP layer's duck-typed hook takes
# ({name: (help, value | {labels: value}, label_names)}); building it is cheap and never
# scans the index (the under-replicated count is the one ChunkCounts last refreshed in a
# worker thread); this module never imports tessera.http.
from __future__ import annotations

import time
from typing import Any

import trio

COUNT_INTERVAL = 5.0      # seconds between two under-replicated scans


class ChunkCounts:
    """(under-replicated, held, stored) chunk counts, rescanned every COUNT_INTERVAL."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.under: int | None = None
        self.held: int | None = None

    async def run(self) -> None:
        while True:
            self.under, self.held, _ = await trio.to_thread.run_sync(self.node._count)
            await trio.sleep(min(COUNT_INTERVAL, max(0.5, self.node.cfg.anti_entropy_interval)))


def gauges(node: Any) -> dict[str, tuple[str, Any, tuple[str, ...]]]:
    now_mono, now = time.monotonic(), time.time()
    client, ae, hints = node.client, node.anti_entropy, node.hints
    up: dict[tuple[str], int] = {}
    age: dict[tuple[str], float] = {}
    queued: dict[tuple[str], int] = {}
    for peer, address in sorted(node.peers.items()):
        ok, _ = client.contact.get(address, (False, 0.0))
        up[(peer,)] = int(ok)
        if address in client.last_ok:
            age[(peer,)] = now_mono - client.last_ok[address]
        queued[(peer,)] = (len(hints.docs.get(peer, ())) + len(hints.chunks.get(peer, ())))
    doc: dict[str, tuple[str, Any, tuple[str, ...]]] = {
        "tessera_cluster_peer_up": (
            "1 if the latest call to the peer succeeded, else 0", up, ("peer",)),
        "tessera_cluster_peer_last_contact_age_seconds": (
            "Seconds since the last successful call to the peer", age, ("peer",)),
        "tessera_cluster_peers": ("Peers of this node in the cluster", len(node.peers), ()),
        "tessera_cluster_hints": (
            "Hinted-handoff queue: writes waiting for the peer to answer again", queued,
            ("peer",)),
        "tessera_cluster_hints_delivered": (
            "Hinted writes delivered since start", hints.delivered, ()),
        "tessera_cluster_antientropy_rounds": (
            "Anti-entropy rounds completed since start", ae.rounds, ()),
        "tessera_cluster_bytes_repaired": (
            "Chunk bytes moved by repair (anti-entropy) since start", ae.bytes_repaired, ()),
        "tessera_cluster_docs_repaired": (
            "Image documents repaired by anti-entropy since start", ae.docs_repaired, ()),
        "tessera_cluster_peer_sent_bytes": (
            "Wire bytes sent to peers", client.bytes_sent, ()),
        "tessera_cluster_peer_received_bytes": (
            "Wire bytes received from peers", client.bytes_received, ()),
    }
    if ae.last_round is not None:
        doc["tessera_cluster_antientropy_last_round_age_seconds"] = (
            "Seconds since the last completed anti-entropy round (replication lag bound)",
            max(0.0, now - ae.last_round), ())
    under = node.counts.under
    if under is not None:
        doc["tessera_cluster_under_replicated_chunks"] = (
            "Chunks this node owns and needs but does not hold durably", under, ())
        doc["tessera_cluster_repair_backlog"] = (
            "Under-replicated chunks plus queued hints", under + hints.backlog(), ())
    return doc
