# Getting chunks from other nodes. Reads: PeerSource is the cluster's chunk source for
# downloads (engine/chunksource.py): it only asks peers for bytes; the engine verifies,
# serves and keeps them (`cache` residency; anti-entropy promotes the ones this node owns).
# Repairs (Fetcher.fetch) store what they get durably, `store` if owned.
# Invariants: a batch is split across owners so several peers serve a cold pull at once;
# concurrent repairs of one chunk share one fetch; a chunk no reachable node holds raises
# Unavailable, never bad bytes (the engine hashes every chunk it stores or serves).
from __future__ import annotations

from typing import Any

import trio

from tessera.engine.chunksource import Want
from tessera.engine.errors import CorruptData, Unavailable
from tessera.replication import messages as m
from tessera.replication.peerclient import PeerError

GET_BATCH = 256


class Fetcher:
    def __init__(self, node: Any) -> None:
        self.node = node
        self._inflight: dict[bytes, trio.Event] = {}
        self._packed: set[str] = set()       # peers that answer chunks/get only
        self.fetched_bytes = 0

    async def fetch(self, ids: list[bytes], *, durable: bool = False) -> None:
        """Make `ids` held here. Reads (durable=False) keep what they fetch as `cache`
        without an fsync (anti-entropy later promotes chunks this node owns); repairs
        (durable=True) store owned chunks fsynced with `store` residency."""
        mine, waits = [], []
        for cid in ids:
            event = self._inflight.get(cid)
            if event is None:
                self._inflight[cid] = trio.Event()
                mine.append(cid)
            else:
                waits.append(event)
        try:
            if mine:
                await self._fetch(mine, durable)
        finally:
            for cid in mine:
                self._inflight.pop(cid).set()
        for event in waits:
            await event.wait()
        still = self.node.replica.missing(ids)
        if still:
            raise Unavailable(f"{len(still)} chunk(s) of this image are held by no reachable "
                              f"node; try again later")

    async def _fetch(self, ids: list[bytes], durable: bool) -> None:
        async def keep(peer: str, items: list[tuple[bytes, bytes]]) -> None:
            await self.store(items, durable)

        await self.gather(ids, keep)

    async def gather(self, ids: list[bytes], take: Any,
                     avoid: dict[bytes, set[str]] | None = None) -> None:
        """Ask the owners of `ids` (then any other node) for them, several peers at once;
        `await take(peer, items)` for each reply's [(id, bytes-like)] (views of the reply's
        buffer); CorruptData from take drops that reply and the next candidate is asked.
        `avoid`: peers not to ask for a chunk (they sent a bad copy of it)."""
        node = self.node
        todo = list(ids)
        avoid = avoid or {}
        tried: dict[bytes, set[str]] = {cid: set(avoid.get(cid, ())) for cid in ids}
        for _ in range(len(node.placement.nodes)):
            if not todo:
                return
            plan = self._plan(todo, tried)
            if not plan:
                return
            got: list[bytes] = []

            async def pull(peer: str, cids: list[bytes]) -> None:
                for i in range(0, len(cids), GET_BATCH):
                    try:
                        items = await self._read(peer, cids[i:i + GET_BATCH])
                        await take(peer, items)
                    except (PeerError, CorruptData):
                        continue
                    got.extend(c for c, _ in items)

            async with trio.open_nursery() as nursery:
                for peer, cids in plan.items():
                    nursery.start_soon(pull, peer, cids)
            done = set(got)
            todo = [cid for cid in todo if cid not in done]

    def _plan(self, todo: list[bytes], tried: dict[bytes, set[str]]) -> dict[str, list[bytes]]:
        """Which peer to ask for each of `todo` (marked tried): its owners first, then any
        other node. `todo` is cut into contiguous parts, one per owning peer, and a chunk
        goes to its part's peer when that peer owns it: a peer then sends runs of adjacent
        chunks (its segment files hold an image's chunks in order) and the reply is already
        the image's bytes in order."""
        node = self.node
        placement = node.placement
        everyone = placement.replicas == len(placement.nodes)   # no ranking needed
        others = [n for n in placement.nodes if n != node.me]
        owning: list[list[str]] = []
        peers: dict[str, None] = {}
        for cid in todo:
            owners = [n for n in (others if everyone else placement.owners(cid))
                      if n != node.me and n not in tried[cid]]
            owning.append(owners)
            peers.update(dict.fromkeys(owners))
        order = list(peers)
        plan: dict[str, list[bytes]] = {}
        for i, (cid, owners) in enumerate(zip(todo, owning)):
            prefer = order[i * len(order) // len(todo)] if order else None
            if prefer in owners:
                source: str | None = prefer
            elif owners:
                source = owners[0]
            else:
                source = next((n for n in node.peers if n not in tried[cid]), None)
            if source is not None:
                tried[cid].add(source)
                plan.setdefault(source, []).append(cid)
        return plan

    async def _read(self, peer: str, ids: list[bytes]) -> list[tuple[bytes, Any]]:
        """The chunks of `ids` `peer` holds: raw (chunks/read, sent from its segment files),
        or packed (chunks/get) from a node that does not serve chunks/read (404)."""
        client, address = self.node.client, self.node.peers[peer]
        if peer not in self._packed:
            try:
                reply = await client.call(address, m.ReadChunks(ids))
                return [(c, d) for c, d in reply if d is not None]
            except PeerError as exc:
                if exc.status != 404:
                    raise
                self._packed.add(peer)
        reply = await client.call(address, m.GetChunks(ids))
        return [(c, d) for c, d in reply.items if d is not None]

    async def store(self, items: list[tuple[bytes, bytes]], durable: bool) -> None:
        node = self.node
        if not durable:
            await node.replica.put_chunks(items, store=False, durable=False)
            self.fetched_bytes += sum(len(d) for _, d in items)
            return
        owned = [(c, d) for c, d in items if node.placement.owns(node.me, c)]
        other = [(c, d) for c, d in items if not node.placement.owns(node.me, c)]
        if owned:
            await node.replica.put_chunks(owned, store=True)
            await node.replica.promote([c for c, _ in owned])
        if other:
            await node.replica.put_chunks(other, store=False)
        self.fetched_bytes += sum(len(d) for _, d in items)


class PeerSource:
    """The cluster's chunk source for downloads: bytes from owners, then any node. Peers
    serve their copies without hashing them (the engine hashes what it receives); a peer
    whose copy of a chunk failed is not asked for that chunk again by this node."""
    name = "peers"
    REMEMBER = 65536                     # chunks whose sender (or bad senders) are known

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._sender: dict[bytes, str] = {}
        self._avoid: dict[bytes, set[str]] = {}

    async def fetch(self, image: Any, wants: list[Want]) -> dict[bytes, bytes]:
        got: dict[bytes, bytes] = {}

        async def take(peer: str, items: list[tuple[bytes, bytes]]) -> None:
            got.update(items)
            if len(self._sender) > self.REMEMBER:
                self._sender.clear()
            self._sender.update((c, peer) for c, _ in items)
            self.fetcher.fetched_bytes += sum(len(d) for _, d in items)

        await self.fetcher.gather([w.cid for w in wants], take, self._avoid)
        return got

    def rejected(self, image: Any, want: Want) -> None:
        peer = self._sender.pop(want.cid, None)
        if peer is not None:
            if len(self._avoid) > self.REMEMBER:
                self._avoid.clear()
            self._avoid.setdefault(want.cid, set()).add(peer)
