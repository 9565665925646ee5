# The anti-entropy auditor: per peer and per round, compare bucket digests of image stamps
# and of chunk ids, descend only into buckets that differ, and transfer only what is
# missing: newer documents both ways (last writer wins), chunks the peer owns but lacks
# (pushed), and chunks this node owns and needs but lacks (pulled).
# A node syncs metadata with every peer as soon as it starts; full rounds follow every
# anti_entropy_interval (or when kicked). Versions older than a tombstone a peer reclaimed
# are dropped, never spread (replication/tombstones.py, docs/replication-protocol.md).
# Invariants: a round between identical nodes exchanges only the digests (2 x 256 x 32
# bytes plus framing); chunk bytes moved by repair pass a byte-rate limiter
# (cfg.repair_rate); digest scans run in a worker thread; a failing peer is skipped until
# the next round, never blocking the others.
from __future__ import annotations

import logging
import time
from typing import Any

import trio

from tessera.engine.records import id_from_key
from tessera.replication import digests as dg
from tessera.replication import messages as m
from tessera.replication.peerclient import PeerError

log = logging.getLogger("tessera.replication")
PUSH_BYTES = 4 * 1024 * 1024
PULL_BATCH = 128          # chunks per repair fetch (about 8 MiB)
PULL_PARALLEL = 4         # repair fetches in flight


def _chunk_entries(node: Any, owner: str) -> list[tuple[bytes, int]]:
    return [(cid, 0) for cid, here, refs, _ in node.replica.iter_chunks()
            if here and refs > 0 and node.placement.owns(owner, cid)]


def _entries(node: Any, kind: str, owner: str) -> list[tuple[bytes, int]]:
    if kind == "stamps":
        return list(node.replica.iter_stamps())
    if kind == "chunks":
        return _chunk_entries(node, owner)
    raise m.ProtocolError(f"unknown digest kind {kind!r}")


async def local_digests(node: Any, kind: str, owner: str) -> list[bytes]:
    entries = await trio.to_thread.run_sync(_entries, node, kind, owner)
    return dg.digests(entries)


async def local_bucket(node: Any, kind: str, owner: str, buckets: list) -> list[list]:
    wanted = {b for b in buckets if isinstance(b, int)}
    entries = await trio.to_thread.run_sync(_entries, node, kind, owner)
    return [[k, s] for k, s in entries if k[0] in wanted]


class RateLimiter:
    """Token bucket in bytes per second (one second of burst)."""

    def __init__(self, rate: int) -> None:
        self.rate = max(1, rate)
        self._tokens = float(self.rate)
        self._at = time.monotonic()

    async def take(self, n: int) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= min(n, self.rate):
                self._tokens -= n
                return
            await trio.sleep((min(n, self.rate) - self._tokens) / self.rate)


class AntiEntropy:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.limiter = RateLimiter(node.cfg.repair_rate)
        self.rounds = 0
        self.last_round: float | None = None
        self.bytes_repaired = 0
        self.docs_repaired = 0
        self.demoted = 0
        self.stale_dropped = 0
        self.synced: dict[str, float] = {}     # peer -> start of the last complete exchange
        self.kick = trio.Event()

    async def run(self) -> None:
        # a (re)started node catches up on metadata at once; chunks follow on the schedule
        for peer in list(self.node.peers):
            try:
                await self._metadata(peer)
            except PeerError as exc:
                log.debug("start-up metadata sync with %s skipped: %s", peer, exc)
        while True:
            with trio.move_on_after(self.node.cfg.anti_entropy_interval):
                await self.kick.wait()
            self.kick = trio.Event()
            await self.round()

    async def round(self) -> None:
        for peer in list(self.node.peers):
            try:
                await self._metadata(peer)
                await self._push_chunks(peer)
            except PeerError as exc:
                log.debug("anti-entropy with %s skipped: %s", peer, exc)
        await self._pull_own()
        self.rounds += 1
        self.last_round = time.time()

    async def _metadata(self, peer: str) -> None:
        """Newer documents both ways. A version the peer lacks whose stamp is at or below
        the peer's reclaim watermark is dead (its tombstone was reclaimed there): dropped
        here, never pushed; one this node lacks at or below its own watermark is not pulled.
        A completed exchange leaves this node holding all the peer held, so it adopts the
        peer's watermark if higher, and is noted in `synced` (the reclaimer waits on it)."""
        node = self.node
        started = time.monotonic()
        address = node.peers[peer]
        reply = await node.client.call(address, m.GetDigests("stamps", peer))
        theirs, their_horizon = reply.buckets, reply.horizon
        entries = await trio.to_thread.run_sync(_entries, node, "stamps", peer)
        mine = dg.digests(entries)
        push, pull, stale = [], [], []
        differ = dg.differing(mine, theirs)
        if differ:
            remote = {bytes(k): s for k, s in
                      (await node.client.call(address, m.GetBucket("stamps", peer,
                                                                   differ))).entries}
            wanted = set(differ)
            horizon = node.replica.horizon()
            local = {k: s for k, s in entries if k[0] in wanted}
            for k, s in local.items():
                if k not in remote and s <= their_horizon:
                    stale.append((id_from_key(k), s))
                elif s > remote.get(k, 0):
                    push.append(k)
            pull += [k for k, s in remote.items()
                     if s > local.get(k, 0) and not (k not in local and s <= horizon)]
        if stale:
            dropped = await node.replica.drop_stale(stale)
            self.stale_dropped += dropped
            if dropped:
                log.warning("dropped %d image record(s) older than tombstones %s reclaimed",
                            dropped, peer)
        if push:
            docs = [d for d in (node.replica.export_doc(id_from_key(k)) for k in push)
                    if d is not None]
            await node.send_docs(peer, docs)
            self.docs_repaired += len(push)
        for i in range(0, len(pull), 64):
            ids = [id_from_key(k) for k in pull[i:i + 64]]
            docs = (await node.client.call(address, m.GetDocs(ids))).docs
            for doc in docs:
                if await node.replica.apply_doc(doc):
                    self.docs_repaired += 1
        if their_horizon > node.replica.horizon():
            await node.replica.raise_horizon(their_horizon)
        self.synced[peer] = started

    async def _push_chunks(self, peer: str) -> None:
        node = self.node
        address = node.peers[peer]
        theirs = (await node.client.call(address, m.GetDigests("chunks", peer))).buckets
        entries = await trio.to_thread.run_sync(_chunk_entries, node, peer)
        mine = dg.digests(entries)
        differ = dg.differing(mine, theirs)
        if differ:
            remote = {bytes(k) for k, _ in
                      (await node.client.call(address, m.GetBucket("chunks", peer,
                                                                   differ))).entries}
            wanted = set(differ)
            lacking = [k for k, _ in entries if k[0] in wanted and k not in remote]
            await self._send(address, lacking)

    async def _send(self, address: str, ids: list[bytes]) -> None:
        node = self.node
        batch, size = [], 0
        for i in range(0, len(ids), 64):
            # ask first: a long repair round must not resend what the peer got meanwhile
            group = (await node.client.call(address, m.HaveChunks(ids[i:i + 64]))).ids
            datas = await node.replica.read_chunks(group)
            for cid, data in zip(group, datas):
                if data is None:
                    continue
                await self.limiter.take(len(data))
                batch.append([cid, data])
                size += len(data)
                if size >= PUSH_BYTES:
                    await node.client.call(address, m.PutChunks(batch, True))
                    self.bytes_repaired += size
                    batch, size = [], 0
        if batch:
            await node.client.call(address, m.PutChunks(batch, True))
            self.bytes_repaired += size

    async def _demote(self, ids: list[bytes]) -> None:
        """Chunks held as `store` here that this node does not own (placement changed, or
        it received an upload it does not own): demoted to `cache` once every owner
        confirms it holds them."""
        node = self.node
        for i in range(0, len(ids), 4096):
            batch = ids[i:i + 4096]
            confirmed = set(batch)
            by_owner: dict[str, list[bytes]] = {}
            for cid in batch:
                for owner in node.placement.owners(cid):
                    by_owner.setdefault(owner, []).append(cid)
            for owner, cids in by_owner.items():
                try:
                    reply = await node.client.call(node.peers[owner], m.HaveChunks(cids))
                except PeerError:
                    confirmed.difference_update(cids)
                    continue
                confirmed.difference_update(reply.ids)
            if confirmed:
                self.demoted += await node.replica.demote(sorted(confirmed))

    async def _pull_own(self) -> None:
        """Chunks this node owns and a manifest here references, but it does not hold
        (fetched durably), or holds only as an unsynced cache fill (promoted)."""
        node = self.node
        wanted, cached = [], []
        former = []
        for cid, here, refs, cache in await trio.to_thread.run_sync(
                lambda: list(node.replica.iter_chunks())):
            owned = node.placement.owns(node.me, cid)
            if refs > 0 and (not here or cache) and owned:
                (cached if here else wanted).append(cid)
            elif here and not cache and not owned:
                former.append(cid)
        await self._demote(former)
        for i in range(0, len(cached), 4096):
            await node.replica.promote(cached[i:i + 4096])
        slots = trio.Semaphore(PULL_PARALLEL)

        async def pull(batch: list[bytes]) -> None:
            before = node.fetcher.fetched_bytes
            try:
                await node.fetcher.fetch(batch, durable=True)
            except Exception as exc:       # Unavailable: no reachable holder this round
                log.debug("anti-entropy pull: %s", exc)
            finally:
                slots.release()
            self.bytes_repaired += node.fetcher.fetched_bytes - before

        async with trio.open_nursery() as nursery:
            for i in range(0, len(wanted), PULL_BATCH):
                batch = wanted[i:i + PULL_BATCH]
                await self.limiter.take(len(batch) * 64 * 1024)
                await slots.acquire()          # at most PULL_PARALLEL batches in flight
                nursery.start_soon(pull, batch)
