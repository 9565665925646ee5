# Checking an s3 store's object tier against its invariants (objdb.py): what fsck-like
# tools and the tests use to prove "no dangling reference".
# Invariants checked:
# - every mapping names an object that has a row; each row's `live` and `chunks` are the
#   sums over the mappings naming it;
# - every chunk entry a manifest references (refcount > 0) has a mapping;
# - (check_objects) every row's object is in the bucket with the row's size.
# Read-only: nothing here writes the index or the bucket.
from __future__ import annotations

from collections import Counter
from typing import Any

from tessera.engine.chunkdb import ChunkEntry
from tessera.engine.objstore.packs import PACKS_DIR


def check_index(tier: Any) -> list[str]:
    """Problems found in the tier's index (empty: consistent)."""
    db, index = tier.db, tier.store.index
    problems: list[str] = []
    live: Counter = Counter()
    count: Counter = Counter()
    with index.read() as txn:
        rows = db.rows(txn)
        for cid, loc in db.iter_locs(txn):
            if loc.obj not in rows:
                problems.append(f"chunk {cid.hex()} maps to object {loc.obj.hex()} "
                                f"which has no row")
            live[loc.obj] += loc.length
            count[loc.obj] += 1
            if loc.offset < 0 or (loc.obj in rows and
                                  loc.offset + loc.length > rows[loc.obj].size):
                problems.append(f"chunk {cid.hex()} lies outside object {loc.obj.hex()}")
        for obj, row in rows.items():
            if (row.live, row.chunks) != (live[obj], count[obj]):
                problems.append(f"object {obj.hex()}: row says {row.live} bytes in "
                                f"{row.chunks} chunks, mappings {live[obj]} in {count[obj]}")
        with txn.cursor(db=tier.store.db.chunks) as cur:
            for key, raw in cur:
                entry = ChunkEntry.unpack(raw)
                if entry.refcount > 0 and db.loc(txn, bytes(key)) is None:
                    problems.append(f"chunk {bytes(key).hex()} is referenced but has no "
                                    f"object")
    return problems


async def check_objects(tier: Any) -> list[str]:
    """Problems between the rows and the bucket: a row whose object is missing or of
    another size (objects without a row are garbage, not problems)."""
    with tier.store.index.read() as txn:
        rows = tier.db.rows(txn)
    listed = dict(await tier.client.list(f"{PACKS_DIR}{tier.writer}/"))
    problems = []
    for obj, row in rows.items():
        if row.foreign:         # another writer's pack: that writer's to keep
            continue
        size = listed.get(tier.key(obj))
        if size is None:
            problems.append(f"object {tier.key(obj)} is indexed but not in the bucket")
        elif size != row.size:
            problems.append(f"object {tier.key(obj)} is {size} bytes, its row says "
                            f"{row.size}")
    return problems
