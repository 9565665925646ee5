# An s3 store shared by the nodes of a cluster (same bucket): the store's part of an image
# document (engine/replica.py). The writer exports the image's manifest extents and where
# each chunk is in the bucket (pack key incl. writer, offset, length); a peer installs them
# into its own s3 store of the same id, so it reads the image straight from the bucket.
# Invariants:
# - The bucket is the durable copy: peers need not hold the chunks (no write quorum).
# - Installed mappings name the writer's packs through `foreign` rows (engine/objstore/
#   objdb.py): this index never repacks nor deletes them (gc.py lists only its own packs).
# - A chunk mapped into one of this index's own packs keeps that mapping; a chunk mapped
#   into another writer's pack takes the location of a newer document (its writer repacked).
# - Manifests are immutable: an existing manifest is kept; a new one is written with its
#   chunks' mappings in the same transaction of the store's index (before the record lists
#   the store, as for every secondary store, engine/stores.py).
from __future__ import annotations

import time
from typing import Any

from tessera.engine import chunkput, manifest
from tessera.engine.chunkdb import CACHE, ms
from tessera.engine.objstore.objdb import Loc


def export(tier: Any, image_id: str) -> dict | None:
    """The store's part of an image document: extents, objects ([digest, writer, size]) and
    locations ([chunk, index into objects, offset, length]); None if the store has no
    manifest of it."""
    store, db = tier.store, tier.db
    key = manifest.image_key(image_id)
    with store.index.read() as txn:
        head = manifest.read_head(txn, store.db.manifests, key)
        if head is None:
            return None
        extents: list = []
        for number in range(len(head.pages)):
            page = manifest.read_page(txn, store.db.manifests, key, number)
            extents.extend([cid, n] for cid, n in zip(page.ids, page.lengths))
        objects: dict[bytes, int] = {}
        listed, locs = [], []
        for cid in manifest.counts(txn, store.db.manifests, key, head):
            loc = db.loc(txn, cid)
            row = None if loc is None else db.row(txn, loc.obj)
            if row is None:
                continue
            if loc.obj not in objects:
                objects[loc.obj] = len(listed)
                listed.append([loc.obj, row.writer or tier.writer, row.size])
            locs.append([cid, objects[loc.obj], loc.offset, loc.length])
    return {"extents": extents, "objects": listed, "locs": locs}


def install(tier: Any, txn: Any, image_id: str, part: dict) -> int:
    """Take a peer's export (in a writer txn of the store's index): the chunks' locations,
    then the manifest if the store has none. Returns how many mappings changed."""
    db, store = tier.db, tier.store
    now = ms(time.time())
    objects = [(bytes(d), str(w), int(size)) for d, w, size in part["objects"]]
    changed = 0
    for cid, number, offset, length in part["locs"]:
        if not 0 <= number < len(objects):
            continue
        cid = bytes(cid)
        obj, writer, size = objects[number]
        cur = db.loc(txn, cid)
        cur_row = None if cur is None else db.row(txn, cur.obj)
        if cur_row is not None and not cur_row.foreign:
            continue                          # in one of this index's own packs
        new = Loc(obj, int(offset), int(length))
        if cur == new and cur_row is not None:
            continue
        if writer == tier.writer:
            if db.row(txn, obj) is None:
                continue                      # an own pack this index does not know
        else:
            db.add_foreign(txn, obj, size, writer, now)
        db.map(txn, cid, new)
        if cur is not None and cur.obj != obj:
            db.remove_if_dead(txn, cur.obj)   # another writer's pack nothing maps into
        changed += 1
    if not store.has_manifest(txn, image_id):
        _add_manifest(store, txn, image_id, part["extents"], now)
    return changed


def _add_manifest(store: Any, txn: Any, image_id: str, extents: list, now: int) -> None:
    """Write the manifest; chunks this store does not hold get a non-resident `cache`
    entry (like an evicted chunk: a read fetches it from the bucket)."""
    chunkput.install_manifest(store, txn, manifest.image_key(image_id), extents,
                              residency=CACHE, now=now)
