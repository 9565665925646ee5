# `tessera status --config FILE` for a cluster: asks every node's peer port for its report
# (signed with the cluster key) and sums them up.
# Invariants: a node that does not answer is shown down, never skipped; the cluster's
# under-replicated count is the sum over the nodes that answered (each counts the chunks it
# owns and needs but lacks), marked incomplete while any node is down.
from __future__ import annotations

import json
from typing import Any

import trio

from tessera.replication import messages as m
from tessera.replication.peerclient import PeerClient, PeerError


async def _collect(cfg: Any) -> dict:
    client = PeerClient(cfg.read_key(), f"status@{cfg.node_id}")
    nodes: list[dict] = []

    async def ask(node: Any) -> None:
        try:
            report = (await client.call(node.peer, m.GetStatus(), timeout=10.0)).report
        except PeerError as exc:
            report = {"node": node.id, "up": False, "error": str(exc)}
        report["api"], report["peer"] = node.api, node.peer
        nodes.append(report)

    async with trio.open_nursery() as nursery:
        for node in cfg.nodes:
            nursery.start_soon(ask, node)
    await client.aclose()
    nodes.sort(key=lambda r: r["node"])
    up = [r for r in nodes if r.get("up")]
    return {"nodes": nodes, "up": len(up), "down": len(nodes) - len(up),
            "under_replicated": sum(r.get("under_replicated", 0) for r in up),
            "complete": len(up) == len(nodes),
            "repair_backlog": sum(r.get("repair_backlog", 0) for r in up),
            "bytes_repaired": sum(r.get("bytes_repaired", 0) for r in up),
            "replicas": cfg.replicas, "write_quorum": cfg.write_quorum}


def cluster_status(cfg: Any) -> dict:
    return trio.run(_collect, cfg)


def render(doc: dict, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(doc, sort_keys=True)
    lines = [f"cluster: {doc['up']} up, {doc['down']} down; R={doc['replicas']} "
             f"W={doc['write_quorum']}; under-replicated chunks: {doc['under_replicated']}"
             + ("" if doc["complete"] else " (incomplete: nodes down)")]
    for r in doc["nodes"]:
        if not r.get("up"):
            lines.append(f"  {r['node']:<8} DOWN  {r['peer']}  ({r.get('error', '')})")
            continue
        last = r.get("last_round")
        lines.append(f"  {r['node']:<8} up    chunks={r['chunks']} "
                     f"under_replicated={r['under_replicated']} "
                     f"backlog={r['repair_backlog']} rounds={r['rounds']} "
                     f"last_round={'never' if last is None else f'{last:.0f}'} "
                     f"bytes_repaired={r['bytes_repaired']}")
    return "\n".join(lines)
