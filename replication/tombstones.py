# Tombstone reclamation: deleted image records are dropped once they are older than
# tombstone_grace AND every peer has completed a metadata exchange with this node that began
# after they were found here (so every node holds the tombstone, or something newer, before
# any node forgets it: no node can still hold an older version of the image to revive).
# Invariants: a round finds the tombstones stamped before now - grace, waits until anti-entropy
# reports a completed metadata exchange with every configured peer that started after the
# find (a peer that is down holds reclamation back), then has the engine drop those that are
# still tombstones with the same stamp (engine/replica.py reclaim(), which raises the node's
# reclaim watermark). The watermark's other half lives in anti-entropy and apply_doc: a
# version stamped at or below a peer's watermark that the peer lacks is dead.
from __future__ import annotations

import logging
import time
from typing import Any

import trio

from tessera.replication.hlc import stamp_at

log = logging.getLogger("tessera.replication")
MAX_PERIOD = 600.0
BATCH = 1000


class Reclaimer:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.grace = node.cfg.tombstone_grace
        self.period = min(max(self.grace / 4, 0.2), MAX_PERIOD)
        self.reclaimed = 0
        self.waiting = 0           # tombstones found, waiting for every peer's exchange

    async def run(self) -> None:
        while True:
            await trio.sleep(self.period)
            await self.round()

    async def round(self) -> int:
        node = self.node
        before = stamp_at(time.time() - self.grace)
        found = await trio.to_thread.run_sync(node.replica.tombstones, before)
        self.waiting = len(found)
        if not found:
            return 0
        since = time.monotonic()
        while not self._acknowledged(since):     # the regular rounds; a down peer waits
            await trio.sleep(max(self.period, 0.2))
        n = 0
        for i in range(0, len(found), BATCH):       # bounded writer transactions
            n += await node.replica.reclaim(found[i:i + BATCH])
        self.reclaimed += n
        self.waiting = 0
        log.info("reclaimed %d tombstone(s) older than %.0f s", n, self.grace)
        return n

    def _acknowledged(self, since: float) -> bool:
        synced = self.node.anti_entropy.synced
        return all(synced.get(peer, -1.0) > since for peer in self.node.peers)
