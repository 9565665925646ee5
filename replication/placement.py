# Placement: rendezvous (highest random weight) hashing of a chunk id over the configured
# node ids gives the chunk's R owners, in preference order.
# Invariants: deterministic on every node (depends only on the id and the node ids); adding
# a node changes a chunk's owners only where the new node enters its top R; removing a node
# changes them only where it was among the top R.
from __future__ import annotations

import hashlib
from collections.abc import Sequence


def weight(node_id: str, chunk_id: bytes) -> int:
    h = hashlib.blake2b(chunk_id, digest_size=8, key=node_id.encode()[:64])
    return int.from_bytes(h.digest(), "big")


def owners(chunk_id: bytes, nodes: Sequence[str], replicas: int) -> list[str]:
    """The `replicas` owners of a chunk, best first."""
    ranked = sorted(nodes, key=lambda n: (weight(n, chunk_id), n), reverse=True)
    return ranked[:replicas]


class Placement:
    def __init__(self, nodes: Sequence[str], replicas: int) -> None:
        self.nodes = tuple(nodes)
        self.replicas = min(replicas, len(self.nodes))

    def owners(self, chunk_id: bytes) -> list[str]:
        if self.replicas == len(self.nodes):     # every node owns every chunk (still ranked)
            return sorted(self.nodes, key=lambda n: (weight(n, chunk_id), n), reverse=True)
        return owners(chunk_id, self.nodes, self.replicas)

    def owns(self, node_id: str, chunk_id: bytes) -> bool:
        if self.replicas == len(self.nodes):     # no ranking needed (called per chunk)
            return node_id in self.nodes
        return node_id in self.owners(chunk_id)
