# One node's replication service: wires the peer listener, the client, placement, the
# clock and the engine's replica hooks, and runs the background tasks (metadata pusher,
# updater, anti-entropy). The composition root calls `attach(cluster_cfg, engine)`; the node
# reports itself as started, and its metrics_source() feeds the host's GET /metrics.
# Invariants: reaches the engine only through its facade (engine.replica, engine.data
# hooks); every peer request goes through PeerClient (signed); local changes are pushed to
# every peer once committed; a push that fails becomes a hint for the updater. An image in
# an s3 store is also published (publish(), the engine's hook): its upload is acknowledged
# only once W nodes installed the document.
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import trio

from tessera.engine.errors import Unavailable
from tessera.replication import messages as m
from tessera.replication import rawchunks
from tessera.replication.antientropy import AntiEntropy, local_digests, local_bucket
from tessera.replication.auth import Verifier
from tessera.replication.fetch import Fetcher, PeerSource
from tessera.replication.hlc import HybridClock
from tessera.replication.integrity import IntegrityAuditor
from tessera.replication.metrics import ChunkCounts, gauges
from tessera.replication.peerclient import PeerClient, PeerError
from tessera.replication.peerserver import PeerServer, RawReply
from tessera.replication.placement import Placement
from tessera.replication.tombstones import Reclaimer
from tessera.replication.updater import Hints
from tessera.replication.writes import QuorumWriter

log = logging.getLogger("tessera.replication")
DOC_BATCH = 64


class ClusterNode:
    def __init__(self, cfg: Any, engine: Any, key: bytes) -> None:
        self.cfg = cfg
        self.me = cfg.node_id
        self.engine = engine
        self.replica = engine.replica
        self.clock = HybridClock(sorted(n.id for n in cfg.nodes).index(cfg.node_id))
        self.placement = Placement([n.id for n in cfg.nodes], cfg.replicas)
        self.client = PeerClient(key, self.me)
        self.peers = {n.id: n.peer for n in cfg.peers}
        self.hints = Hints(self.replica.hints, [n.id for n in cfg.peers], max(1, cfg.max_hints))
        self.fetcher = Fetcher(self)
        self.writer = QuorumWriter(self)
        self.anti_entropy = AntiEntropy(self)
        self.auditor = IntegrityAuditor(self)
        self.counts = ChunkCounts(self)
        self.reclaimer = Reclaimer(self)
        self.server = PeerServer(Verifier(key, cfg.max_skew), {
            m.HaveChunks: self._have, m.HoldChunks: self._hold, m.PutChunks: self._put_chunks,
            m.GetChunks: self._get_chunks, m.ReadChunks: self._read_chunks,
            m.PutDocs: self._put_docs, m.GetDocs: self._get_docs, m.GetDigests: self._digests,
            m.GetBucket: self._bucket, m.GetStatus: self._status})
        self._lock = threading.Lock()
        self._dirty: dict[str, int] = {}
        self._wake = trio.Event()
        self._token: Any = None
        self._nursery: Any = None
        self._server_scope: Any = None
        self.bound: tuple[str, int] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        host, _, port = self.cfg.bind.rpartition(":")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            bound = await nursery.start(self._serve_peers, host.strip("[]"), int(port))
            self.replica.install(self.clock, self._changed)
            self.engine.data.upload_session = self.writer.session
            self.engine.data.publish = self.publish
            self.engine.data.add_chunk_source(PeerSource(self.fetcher))
            nursery.start_soon(self._pusher)
            nursery.start_soon(self.hints.run, self)
            nursery.start_soon(self.anti_entropy.run)
            nursery.start_soon(self.auditor.run)
            nursery.start_soon(self.counts.run)
            nursery.start_soon(self.reclaimer.run)
            print(f"tessera: peer port on {bound[0]}:{bound[1]} (node {self.me})", flush=True)
            self.bound = bound
            task_status.started(self)      # the node: the host shows metrics_source()

    def metrics_source(self) -> dict:
        """Replication gauges for GET /metrics (the host's duck-typed hook)."""
        return gauges(self)

    async def _serve_peers(self, host: str, port: int, *,
                           task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self._server_scope:
            await self.server.serve(host, port, task_status=task_status)

    async def partition(self) -> None:
        """Cut this node off its peers (maintenance, fault tests): the peer listener stops
        and outgoing peer calls fail; the public API keeps serving. heal() undoes it."""
        self._server_scope.cancel()
        self.client.blocked = True
        await trio.sleep(0)

    async def heal(self) -> None:
        self.client.blocked = False
        host, _, port = self.cfg.bind.rpartition(":")
        await self._nursery.start(self._serve_peers, host.strip("[]"), int(port))

    # -- metadata push --------------------------------------------------------------------
    def _changed(self, image_id: str, stamp: int) -> None:
        """From the writer thread, before commit: remember and wake the pusher."""
        with self._lock:
            self._dirty[image_id] = max(stamp, self._dirty.get(image_id, 0))
        if self._token is not None:
            try:
                self._token.run_sync_soon(self._wake.set)
            except trio.RunFinishedError:
                pass

    async def _pusher(self) -> None:
        waiting: dict[str, tuple[int, float]] = {}
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            with self._lock:
                dirty, self._dirty = self._dirty, {}
            now = time.monotonic()
            for image_id, stamp in dirty.items():
                waiting[image_id] = (max(stamp, waiting.get(image_id, (0, 0))[0]), now)
            ready = []
            for image_id, (stamp, since) in list(waiting.items()):
                if self.replica.stamp_of(image_id) >= stamp:
                    ready.append(image_id)
                    del waiting[image_id]
                elif now - since > 10.0:       # never committed: anti-entropy decides
                    del waiting[image_id]
            if ready:
                await self.push_docs(ready)
            if waiting:
                await trio.sleep(0.005)
                self._wake.set()

    async def push_docs(self, image_ids: list[str], peers: list[str] | None = None) -> None:
        docs = [d for d in (self.replica.export_doc(i) for i in image_ids) if d is not None]
        if not docs:
            return
        async with trio.open_nursery() as nursery:
            for peer in peers or list(self.peers):
                nursery.start_soon(self._push, peer, docs)

    async def _push(self, peer: str, docs: list[dict]) -> bool:
        """Send `docs` to `peer`; False (and a hint for the updater) if it failed."""
        try:
            await self.send_docs(peer, docs)
        except PeerError as exc:
            log.info("metadata push to %s failed (%s): queued for the updater", peer, exc)
            await self.hints.add_docs(peer, [d["id"] for d in docs])
            return False
        return True

    async def publish(self, image_id: str) -> None:
        """The engine's publish hook (engine/publish.py): push the image's committed
        document to every peer, as the pusher does, and return once W nodes (this one
        counts) installed it; Unavailable (HTTP 503) when fewer peers acknowledged. Pushes
        still running go on in the background; failed ones became hints."""
        need = min(self.cfg.write_quorum, len(self.placement.nodes)) - 1
        doc = self.replica.export_doc(image_id)
        if need <= 0 or doc is None:
            return
        acked: list[str] = []
        failed: list[str] = []
        pending = len(self.peers)
        enough = trio.Event()

        async def push(peer: str) -> None:
            nonlocal pending
            try:
                (acked if await self._push(peer, [doc]) else failed).append(peer)
            finally:
                pending -= 1
                if len(acked) >= need or pending == 0:
                    enough.set()

        for peer in self.peers:
            self._nursery.start_soon(push, peer)
        await enough.wait()
        if len(acked) < need:
            raise Unavailable(
                f"Not enough replicas: the metadata of image {image_id} reached fewer than "
                f"write_quorum={need + 1} nodes (unreachable: {', '.join(sorted(failed))}). "
                f"The upload was not accepted; retry when the cluster is healthy.")

    async def send_docs(self, peer: str, docs: list[dict]) -> None:
        """PutDocs to `peer` in batches; PeerError if any batch fails."""
        for i in range(0, len(docs), DOC_BATCH):
            await self.client.call(self.peers[peer], m.PutDocs(docs[i:i + DOC_BATCH]))

    # -- peer handlers --------------------------------------------------------------------
    async def _have(self, node: str, msg: m.HaveChunks) -> m.Missing:
        return m.Missing(self.replica.missing(m.check_ids(msg.ids)))

    async def _hold(self, node: str, msg: m.HoldChunks) -> m.Missing:
        return m.Missing(await self.replica.hold(m.check_ids(msg.ids)))

    async def _put_chunks(self, node: str, msg: m.PutChunks) -> m.Stored:
        m.check_ids([item[0] for item in msg.items])
        owned = [(c, d) for c, d in msg.items if self.placement.owns(self.me, c)]
        other = [(c, d) for c, d in msg.items if not self.placement.owns(self.me, c)]
        added = 0
        if owned:
            added += await self.replica.put_chunks(owned, store=True)
            await self.replica.promote([c for c, _ in owned])
        if other:
            added += await self.replica.put_chunks(other, store=False)
        return m.Stored(added)

    async def _get_chunks(self, node: str, msg: m.GetChunks) -> m.Chunks:
        ids = m.check_ids(msg.ids)
        datas = await self.replica.read_chunks(ids, verify=False)   # the reader hashes
        return m.Chunks([[c, d] for c, d in zip(ids, datas)])

    async def _read_chunks(self, node: str, msg: m.ReadChunks) -> RawReply:
        ids = m.check_ids(msg.ids)
        lengths, parts = await self.replica.chunk_runs(ids)     # the reader hashes
        return RawReply(rawchunks.header(ids, lengths), parts)

    async def _put_docs(self, node: str, msg: m.PutDocs) -> m.Applied:
        applied = 0
        for doc in msg.docs:
            if await self.replica.apply_doc(doc):
                applied += 1
        return m.Applied(applied)

    async def _get_docs(self, node: str, msg: m.GetDocs) -> m.Docs:
        docs = [self.replica.export_doc(i) for i in msg.ids]
        return m.Docs([d for d in docs if d is not None])

    async def _digests(self, node: str, msg: m.GetDigests) -> m.Digests:
        return m.Digests(await local_digests(self, msg.kind, msg.owner),
                         self.replica.horizon())

    async def _bucket(self, node: str, msg: m.GetBucket) -> m.Bucket:
        return m.Bucket(await local_bucket(self, msg.kind, msg.owner, msg.buckets))

    async def _status(self, node: str, msg: m.GetStatus) -> m.Status:
        return m.Status(await self.status())

    async def status(self) -> dict:
        under, held, stored = await trio.to_thread.run_sync(self._count)
        tombstones = len(await trio.to_thread.run_sync(self.replica.tombstones))
        ae, hints = self.anti_entropy, self.hints
        return {"node": self.me, "up": True, "chunks": held, "store_chunks": stored,
                "under_replicated": under, "demoted": ae.demoted,
                "repair_backlog": hints.backlog() + under,
                "hints": hints.backlog(), "hints_delivered": hints.delivered,
                "hints_overflowed": hints.overflowed, "rounds": ae.rounds,
                "last_round": ae.last_round, "bytes_repaired": ae.bytes_repaired,
                "images": len(self.replica.image_ids()), "tombstones": tombstones,
                "tombstones_reclaimed": self.reclaimer.reclaimed,
                "tombstones_waiting": self.reclaimer.waiting,
                "reclaim_horizon": self.replica.horizon(), "stale_dropped": ae.stale_dropped,
                "audited": self.auditor.audited, "quarantined": self.auditor.quarantined,
                "audit_repaired": self.auditor.repaired,
                "peer_bytes_sent": self.client.bytes_sent,
                "peer_bytes_received": self.client.bytes_received}

    def _count(self) -> tuple[int, int, int]:
        """(chunks this node owns and needs but does not hold durably, chunks held,
        chunks held with `store` residency)."""
        under = held = stored = 0
        for cid, here, refs, cache in self.replica.iter_chunks():
            if here:
                held += 1
                stored += not cache
            if refs > 0 and (not here or cache) and self.placement.owns(self.me, cid):
                under += 1          # owned and needed, but missing or not yet durable
        return under, held, stored


async def attach(cluster_cfg: Any, engine: Any, *,
                 task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run replication for `engine` until cancelled (the composition root starts this)."""
    node = ClusterNode(cluster_cfg, engine, cluster_cfg.read_key())
    try:
        await node.run(task_status=task_status)
    finally:
        with trio.CancelScope(shield=True):
            await node.client.aclose()
