# The updater (hinted handoff): writes that could not reach a peer are remembered here and
# delivered when the peer answers again.
# Invariants: hints hold ids only (documents and chunk bytes are re-read from the local
# store at delivery, so a hint never delivers stale data); a hint is persisted (through the
# engine's replica.hints, LMDB) before it counts, and dropped only after the peer
# acknowledged it, so a restart of this node loses none; a hint re-added while it is being
# delivered stays queued. The queue is bounded (cfg.max_hints per peer): past it new hints
# are dropped (counted) and anti-entropy, which compares full state, repairs instead.
from __future__ import annotations

import logging
from typing import Any

import trio

from tessera.engine.records import id_from_key, id_key
from tessera.replication import messages as m
from tessera.replication.peerclient import PeerError

log = logging.getLogger("tessera.replication")
INTERVAL = 1.0
BATCH_BYTES = 4 * 1024 * 1024
CHUNK_BATCH = 4096


class Hints:
    def __init__(self, store: Any, peers: list[str], limit: int) -> None:
        self.store = store                    # engine/replicahints.py ReplicaHints
        self.limit = limit
        self.docs: dict[str, set[str]] = {}
        self.chunks: dict[str, set[bytes]] = {}
        self.delivered = 0
        self.overflowed = 0
        self._busy: dict[str, set] = {}      # peer -> keys being delivered
        self._again: dict[str, set] = {}     # peer -> keys re-added meanwhile
        for peer in peers:
            docs = store.load(peer, "docs")
            chunks = store.load(peer, "chunks")
            if docs:
                self.docs[peer] = {id_from_key(k) for k in docs}
            if chunks:
                self.chunks[peer] = set(chunks)

    def _room(self, peer: str) -> int:
        return self.limit - len(self.docs.get(peer, ())) - len(self.chunks.get(peer, ()))

    async def _add(self, peer: str, held: set, kind: str, keys: list, raw: list[bytes]) -> None:
        busy = self._busy.get(peer, set())
        self._again.setdefault(peer, set()).update(k for k in keys if k in busy)
        fresh = [(k, r) for k, r in zip(keys, raw) if k not in held]
        room = self._room(peer)
        if len(fresh) > room:
            self.overflowed += len(fresh) - max(room, 0)
            log.warning("hint queue for %s is full (max_hints=%d): anti-entropy repairs the "
                        "rest", peer, self.limit)
            fresh = fresh[:max(room, 0)]
        if fresh:
            await self.store.add(peer, kind, [r for _, r in fresh])
            held.update(k for k, _ in fresh)

    async def add_docs(self, peer: str, ids: list[str]) -> None:
        await self._add(peer, self.docs.setdefault(peer, set()), "docs", ids,
                        [id_key(i) for i in ids])

    async def add_chunks(self, peer: str, ids: list[bytes]) -> None:
        await self._add(peer, self.chunks.setdefault(peer, set()), "chunks", ids, ids)

    def backlog(self) -> int:
        return sum(map(len, self.docs.values())) + sum(map(len, self.chunks.values()))

    async def run(self, node: Any) -> None:
        while True:
            await trio.sleep(INTERVAL)
            for peer in list(set(self.docs) | set(self.chunks)):
                if peer not in node.peers:
                    continue
                try:
                    await self._deliver(node, peer)
                except PeerError:
                    continue
                finally:
                    self._busy.pop(peer, None)
                    self._again.pop(peer, None)

    async def _done(self, peer: str, held: set, kind: str, keys: list, raw: list) -> None:
        again = self._again.get(peer, set())
        gone = [(k, r) for k, r in zip(keys, raw) if k not in again]
        await self.store.drop(peer, kind, [r for _, r in gone])
        held.difference_update(k for k, _ in gone)
        self.delivered += len(gone)

    async def _deliver(self, node: Any, peer: str) -> None:
        address = node.peers[peer]
        ids = sorted(self.docs.get(peer, ()))
        if ids:
            self._busy[peer] = set(ids)
            self._again[peer] = set()
            docs = [d for d in (node.replica.export_doc(i) for i in ids) if d is not None]
            await node.send_docs(peer, docs)
            await self._done(peer, self.docs[peer], "docs", ids, [id_key(i) for i in ids])
        cids = sorted(self.chunks.get(peer, ()))[:CHUNK_BATCH]
        if cids:
            self._busy[peer] = set(cids)
            self._again[peer] = set()
            missing = (await node.client.call(address, m.HaveChunks(cids))).ids
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
            await self._done(peer, self.chunks[peer], "chunks", cids, cids)
