# Quorum writes: the chunks of an upload stream to their other owners while the upload is
# still arriving (an upload session fed by the engine's ingest observer); before the image
# becomes active, whatever did not stream (chunks the store already held, failed batches) is
# checked and pushed, and the upload is acknowledged only when each chunk has W durable
# copies (this node's fsynced copy counts as one).
# Invariants: a peer counts a copy only after it answered, at the end of the upload, that
# it holds the chunk (HoldChunks; its put is hashed, fsynced and committed before it
# answers, and the answer restarts the copy's reaper grace); fewer than W copies for any chunk
# raises Unavailable (HTTP 503) and the upload is not activated; owners that could not be
# reached get a hint so the updater completes replication later. Memory stays bounded: the
# session's channel holds at most QUEUE batches, and the ingest's chunk thread waits when
# it is full (backpressure to the client).
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import trio

from tessera.engine.errors import Unavailable
from tessera.replication import messages as m
from tessera.replication.peerclient import PeerError

log = logging.getLogger("tessera.replication")
BATCH_BYTES = 4 * 1024 * 1024
HAVE_BATCH = 4096
QUEUE = 2


class QuorumWriter:
    def __init__(self, node: Any) -> None:
        self.node = node

    def session(self, image_id: str) -> "UploadSession":
        """The engine's upload_session hook."""
        return UploadSession(self.node, image_id)


class UploadSession:
    def __init__(self, node: Any, image_id: str) -> None:
        self.node = node
        self.image_id = image_id
        self.token = trio.lowlevel.current_trio_token()
        self._send, self._recv = trio.open_memory_channel[list](QUEUE)
        self.failed: set[str] = set()
        self._done = trio.Event()
        self._scope = trio.CancelScope()
        node._nursery.start_soon(self._stream)

    # -- called from the ingest's chunk thread ------------------------------------------------
    def observe(self, items: list[tuple[bytes, bytes]]) -> None:
        trio.from_thread.run(self._send.send, items, trio_token=self.token)

    # -- the streaming task -------------------------------------------------------------------
    async def _stream(self) -> None:
        try:
            with self._scope:
                async for items in self._recv:
                    try:
                        await self._push_batch(items)
                    except Exception:            # keep draining: finish() completes
                        log.exception("streaming chunks of %s failed", self.image_id)
        finally:
            self._done.set()

    async def _push_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        node = self.node
        per_peer: dict[str, list[list]] = {}
        for cid, data in items:
            for owner in node.placement.owners(cid):
                if owner != node.me and owner not in self.failed:
                    per_peer.setdefault(owner, []).append([cid, data])

        async def send(peer: str, batch: list[list]) -> None:
            try:
                await node.client.call(node.peers[peer], m.PutChunks(batch, True))
            except PeerError:
                self.failed.add(peer)

        async with trio.open_nursery() as nursery:
            for peer, batch in per_peer.items():
                nursery.start_soon(send, peer, batch)

    # -- the engine's hooks ------------------------------------------------------------------
    async def finish(self, ingested: Any) -> None:
        await self._send.aclose()
        await self._done.wait()
        node = self.node
        ids = ingested.chunk_ids()
        # every other owner confirms every chunk now (HoldChunks), streamed ones included:
        # the confirmation restarts the reaper grace of a copy no manifest references yet,
        # so a copy streamed early in a long upload is not reaped before the document comes
        targets: dict[str, list[bytes]] = {}
        for cid in ids:
            for owner in node.placement.owners(cid):
                if owner != node.me:
                    targets.setdefault(owner, []).append(cid)
        copies: Counter = Counter({cid: 1 for cid in ids})
        failed: set[str] = set()

        async def complete(peer: str, cids: list[bytes]) -> None:
            try:
                confirmed = await self._push(peer, cids, ingested)
            except PeerError:
                failed.add(peer)
                await node.hints.add_chunks(peer, cids)
                return
            copies.update(confirmed)

        async with trio.open_nursery() as nursery:
            for peer, cids in targets.items():
                nursery.start_soon(complete, peer, cids)
        need = min(node.cfg.write_quorum, len(node.placement.nodes))
        short = sum(1 for cid in ids if copies[cid] < need)
        if short:
            raise Unavailable(
                f"Not enough replicas: {short} chunk(s) of this upload reached fewer than "
                f"write_quorum={need} nodes (unreachable: {', '.join(sorted(failed))}). "
                f"The upload was not accepted; retry when the cluster is healthy.")

    async def abort(self) -> None:
        self._scope.cancel()
        await self._send.aclose()
        await self._recv.aclose()

    async def _push(self, peer: str, cids: list[bytes], ingested: Any) -> list[bytes]:
        """Chunks `peer` holds after this call (it had them or stored them)."""
        client, address = self.node.client, self.node.peers[peer]
        missing: list[bytes] = []
        for i in range(0, len(cids), HAVE_BATCH):
            reply = await client.call(address, m.HoldChunks(cids[i:i + HAVE_BATCH]))
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
