# The integrity auditor: rehashes the chunks this node holds, at a bounded byte rate, in id
# order, pass after pass; a chunk whose bytes fail is quarantined (the engine stops holding
# it) and refetched from a peer that holds a good copy.
# Invariants: reads run in worker threads and pass the rate limiter before hashing; a chunk
# that failed is never served (quarantined; reads also verify chunks whose last verification
# is older than trust_verified_for); a chunk no peer can
# provide stays quarantined and counts as under-replicated until one can.
from __future__ import annotations

import logging
from typing import Any

import trio

from tessera.replication.antientropy import RateLimiter

log = logging.getLogger("tessera.replication")
PAUSE = 5.0          # seconds between passes


class IntegrityAuditor:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.limiter = RateLimiter(node.cfg.audit_rate)
        self.audited = 0
        self.quarantined = 0
        self.repaired = 0
        self.passes = 0

    async def run(self) -> None:
        while True:
            await self.one_pass()
            await trio.sleep(PAUSE)

    async def one_pass(self) -> None:
        replica = self.node.replica
        held = await trio.to_thread.run_sync(
            lambda: [cid for cid, here, _, _ in replica.iter_chunks() if here])
        for cid in held:
            await self.limiter.take(64 * 1024)
            good = await trio.to_thread.run_sync(replica.verify_chunk, cid)
            self.audited += 1
            if good is False:
                await self.repair(cid)
        self.passes += 1

    async def repair(self, cid: bytes) -> None:
        log.warning("chunk %s failed verification: quarantined, refetching", cid.hex())
        self.quarantined += await self.node.replica.quarantine([cid])
        try:
            await self.node.fetcher.fetch([cid], durable=True)
        except Exception as exc:            # Unavailable: retried on the next pass
            log.warning("chunk %s could not be refetched yet: %s", cid.hex(), exc)
            return
        self.repaired += 1
