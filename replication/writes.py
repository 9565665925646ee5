# Quorum writes: before an upload becomes active, every chunk of it is pushed to its other
# owners; the upload is acknowledged only when each chunk has W durable copies (this node's
# fsynced copy counts as one).
# Invariants: a peer counts a copy only after it answered that it holds the chunk (its
# put is hashed, fsynced and committed before it answers); fewer than W copies for any chunk
# raises Unavailable (HTTP 503) and the upload is not activated; owners that could not be
# reached get a hint so the updater completes replication later.
from __future__ import annotations

from collections import Counter
from typing import Any

import trio

from tessera.engine.errors import Unavailable
from tessera.replication import messages as m
from tessera.replication.peerclient import PeerError

BATCH_BYTES = 4 * 1024 * 1024
HAVE_BATCH = 4096


class QuorumWriter:
    def __init__(self, node: Any) -> None:
        self.node = node

    async def replicate_upload(self, image_id: str, ingested: Any) -> None:
        node = self.node
        ids = ingested.chunk_ids()
        targets: dict[str, list[bytes]] = {}
        for cid in ids:
            for owner in node.placement.owners(cid):
                if owner != node.me:
                    targets.setdefault(owner, []).append(cid)
        copies: Counter = Counter({cid: 1 for cid in ids})
        failed: list[str] = []

        async def to_peer(peer: str, cids: list[bytes]) -> None:
            try:
                confirmed = await self._push(peer, cids, ingested)
            except PeerError:
                failed.append(peer)
                node.hints.add_chunks(peer, cids)
                return
            copies.update(confirmed)

        async with trio.open_nursery() as nursery:
            for peer, cids in targets.items():
                nursery.start_soon(to_peer, peer, cids)
        need = min(node.cfg.write_quorum, len(node.placement.nodes))
        short = sum(1 for cid in ids if copies[cid] < need)
        if short:
            raise Unavailable(
                f"Not enough replicas: {short} chunk(s) of this upload reached fewer than "
                f"write_quorum={need} nodes (unreachable: {', '.join(sorted(failed))}). "
                f"The upload was not accepted; retry when the cluster is healthy.")

    async def _push(self, peer: str, cids: list[bytes], ingested: Any) -> list[bytes]:
        """Chunks `peer` holds after this call (it had them or stored them)."""
        client, address = self.node.client, self.node.peers[peer]
        missing: list[bytes] = []
        for i in range(0, len(cids), HAVE_BATCH):
            reply = await client.call(address, m.HaveChunks(cids[i:i + HAVE_BATCH]))
            missing.extend(reply.ids)
        lacking = set(missing)
        confirmed = [c for c in cids if c not in lacking]
        batch: list[list] = []
        size = 0
        for cid in missing:
            view = ingested.view(cid)
            data = bytes(view) if view is not None else self.node.replica.chunk_bytes(cid)
            if data is None:
                continue
            batch.append([cid, data])
            size += len(data)
            if size >= BATCH_BYTES:
                await client.call(address, m.PutChunks(batch, True))
                confirmed.extend(c for c, _ in batch)
                batch, size = [], 0
        if batch:
            await client.call(address, m.PutChunks(batch, True))
            confirmed.extend(c for c, _ in batch)
        return confirmed
