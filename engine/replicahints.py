# The updater's persisted queue (hinted handoff), the engine side: which writes a replication
# layer still owes to which peer, as keys `replica/hint/<peer>\0<kind><key>` in `meta`
# (docs: image id keys, chunks: chunk ids), so a restart of the node holding them loses none.
# Invariants: ids only, never document or chunk bytes (the sender re-reads the current
# local state at delivery); every change is a writer job; reads are short read txns.
from __future__ import annotations

from typing import Any

_PREFIX = b"replica/hint/"


class ReplicaHints:
    def __init__(self, index: Any) -> None:
        self.index = index
        self.meta = index.db("meta")

    @staticmethod
    def _hint_prefix(peer: str, kind: str) -> bytes:
        return _PREFIX + peer.encode() + b"\0" + kind.encode()

    def load(self, peer: str, kind: str) -> list[bytes]:
        """The keys queued for `peer` (`kind` "docs": id keys, "chunks": chunk ids)."""
        prefix = self._hint_prefix(peer, kind)
        out = []
        with self.index.read() as txn:
            cur = txn.cursor(db=self.meta)
            ok = cur.set_range(prefix)
            while ok and bytes(cur.key()).startswith(prefix):
                out.append(bytes(cur.key())[len(prefix):])
                ok = cur.next()
        return out

    async def add(self, peer: str, kind: str, keys: list[bytes]) -> None:
        prefix = self._hint_prefix(peer, kind)

        def put(txn: Any) -> None:
            for k in keys:
                txn.put(prefix + k, b"", db=self.meta)

        await self.index.writer.run(put)

    async def drop(self, peer: str, kind: str, keys: list[bytes]) -> None:
        prefix = self._hint_prefix(peer, kind)

        def drop(txn: Any) -> None:
            for k in keys:
                txn.delete(prefix + k, db=self.meta)

        await self.index.writer.run(drop)
