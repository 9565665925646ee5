# The updater (hinted handoff): writes that could not reach a peer are remembered here and
# delivered when the peer answers again.
# Invariants: hints hold ids only (documents and chunk bytes are re-read from the local
# store at delivery, so a hint never delivers stale data); a hint is dropped only after
# the peer acknowledged it; hints live in memory (bounded, MAX_HINTS per peer): a restart
# or an overflow loses them and anti-entropy, which compares full state, repairs instead.
from __future__ import annotations

from typing import Any

import trio

from tessera.replication import messages as m
from tessera.replication.peerclient import PeerError

MAX_HINTS = 1_000_000
INTERVAL = 1.0
BATCH_BYTES = 4 * 1024 * 1024


class Hints:
    def __init__(self) -> None:
        self.docs: dict[str, set[str]] = {}
        self.chunks: dict[str, set[bytes]] = {}
        self.delivered = 0

    def add_docs(self, peer: str, ids: list[str]) -> None:
        held = self.docs.setdefault(peer, set())
        if len(held) < MAX_HINTS:
            held.update(ids)

    def add_chunks(self, peer: str, ids: list[bytes]) -> None:
        held = self.chunks.setdefault(peer, set())
        if len(held) < MAX_HINTS:
            held.update(ids)

    def backlog(self) -> int:
        return sum(map(len, self.docs.values())) + sum(map(len, self.chunks.values()))

    async def run(self, node: Any) -> None:
        while True:
            await trio.sleep(INTERVAL)
            for peer in list(set(self.docs) | set(self.chunks)):
                try:
                    await self._deliver(node, peer)
                except PeerError:
                    continue

    async def _deliver(self, node: Any, peer: str) -> None:
        address = node.peers[peer]
        ids = sorted(self.docs.get(peer, ()))
        if ids:
            docs = [d for d in (node.replica.export_doc(i) for i in ids) if d is not None]
            for i in range(0, len(docs), 64):
                await node.client.call(address, m.PutDocs(docs[i:i + 64]))
            self.docs[peer].difference_update(ids)
            self.delivered += len(ids)
        cids = list(self.chunks.get(peer, ()))
        if cids:
            missing = (await node.client.call(address, m.HaveChunks(cids[:4096]))).ids
            cids = cids[:4096]
            batch, size = [], 0
            for cid in missing:
                data = await trio.to_thread.run_sync(node.replica.chunk_bytes, cid)
                if data is None:
                    continue
                batch.append([cid, data])
                size += len(data)
                if size >= BATCH_BYTES:
                    await node.client.call(address, m.PutChunks(batch, True))
                    batch, size = [], 0
            if batch:
                await node.client.call(address, m.PutChunks(batch, True))
            self.chunks[peer].difference_update(cids)
            self.delivered += len(cids)
