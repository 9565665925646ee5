# Publishing an image that lives in a shared s3 store: in a cluster its document (record +
# the store's chunk locations, engine/objstore/shared.py) must be installed on W nodes
# before the upload or import is acknowledged, since no peer holds its chunks (the bucket
# is the durable copy) and the document is all a peer needs to serve it.
# Invariants:
# - The hook (`DataPath.publish`, installed by a replication layer; None on a single node)
#   runs after the activating transaction committed here (a document is exported from
#   committed state only) and raises (Unavailable: fewer than W nodes) to fail the request.
# - On failure the record's data fields (and the given others) are put back as they were
#   before the activating transaction, in one shielded transaction, if the record still
#   shows what that transaction wrote; the caller then releases the store's manifest, as
#   for any failure before activation (its packs become garbage the reaper removes). The
#   restore is an ordinary stamped change, so peers that took the active document get it.
from __future__ import annotations

import time
from typing import Any

import trio

from tessera.engine.records import ImageRecord

DATA_FIELDS = ("status", "size", "virtual_size", "checksum", "os_hash_algo",
               "os_hash_value", "blake3", "stores")


def in_shared_store(stores: Any, names: Any) -> bool:
    """Whether any of `names` is an s3 store (one the nodes of a cluster share)."""
    if stores is None:
        return False
    return any(getattr(stores.get(n), "tier", None) is not None
               for n in stores.others_of(tuple(names)))


async def publish(hook: Any, catalog: Any, before: ImageRecord, after: ImageRecord, *,
                  fields: tuple[str, ...] = DATA_FIELDS, chunks: Any = None) -> None:
    """Run the publish hook for `after` (just committed over `before`); if it raises,
    restore `fields` of `before` (and release the image's references in `chunks`, the
    main store, when the activating transaction added them) and re-raise."""
    if hook is None:
        return
    try:
        await hook(after.id)
    except BaseException:
        with trio.CancelScope(shield=True):
            await catalog.run(lambda txn: _restore(txn, catalog, before, after, fields,
                                                   chunks))
        raise


def _restore(txn: Any, catalog: Any, before: ImageRecord, after: ImageRecord,
             fields: tuple[str, ...], chunks: Any) -> None:
    cur = catalog.load(txn, after.id)
    if cur is None or cur.status != after.status or cur.stores != after.stores:
        return                      # changed since (deleted, deactivated): that one stands
    catalog.store(txn, cur, cur.evolve(updated_at=time.time(),
                                       **{f: getattr(before, f) for f in fields}))
    if chunks is not None:
        chunks.release(txn, after.id)
