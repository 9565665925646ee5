# Per-project totals (Glance's unified limits: image_count_total, image_size_total,
# image_stage_total, image_count_uploading), kept as counters in the `usage` database and
# checked inside the same write transaction as the change they limit.
# Invariants:
# - The counters of a project are the sum of the contributions of its image records
#   (`contribution`); Catalog.store applies the difference of every record change
#   (`account`) in the transaction that stores it, so a counter never drifts from the
#   records it sums. A store written before the counters
#   existed is counted once when it is opened (`rebuild`).
# - A check (`enforce`) compares usage + delta with the limit exactly as oslo.limit does
#   (over when usage + delta > limit) and raises TooLarge with Glance's 413 message. A limit
#   of None (or negative) is unlimited, the default, as Glance without Keystone limits.
# - Sizes are counted in bytes; messages and /v2/info/usage show MiB as Glance does.
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from tessera.engine.config import EngineConfig
from tessera.engine.errors import TooLarge
from tessera.engine.index import pack, unpack
from tessera.engine.records import ImageRecord, decode_image

MiB = 1024 * 1024
RESOURCES = ("image_size_total", "image_stage_total", "image_count_total",
             "image_count_uploading")
UPLOADING = frozenset({"saving", "uploading", "importing"})
STAGED = frozenset({"uploading", "importing"})
UNCOUNTED = frozenset({"deleted", "pending_delete"})
REBUILT_KEY = b"usage_counted"       # meta key: the counters cover every record

# Field order of a packed usage value.
_COUNT, _BYTES, _STAGED, _UPLOADING = range(4)


@dataclass(frozen=True)
class Usage:
    image_count_total: int = 0
    image_size_total: int = 0       # bytes
    image_stage_total: int = 0      # bytes
    image_count_uploading: int = 0


def _key(owner: str | None) -> bytes:
    """b"p" + the project id (b"h" + its SHA-256 when too long for an LMDB key)."""
    raw = (owner or "").encode("utf-8", "surrogatepass")
    return b"p" + raw if len(raw) <= 256 else b"h" + hashlib.sha256(raw).digest()


def contribution(rec: ImageRecord | None) -> tuple[int, int, int, int]:
    """(images, stored bytes, staged bytes, uploading images) one record adds to its owner.
    Staged bytes are the size of an image holding staged data (uploading or importing, with
    a size and no stored data yet), as Glance counts image_stage_total."""
    if rec is None or rec.status in UNCOUNTED:
        return 0, 0, 0, 0
    size = rec.size or 0
    stored = size if rec.stores else 0
    staged = size if not rec.stores and rec.status in STAGED else 0
    return 1, stored, staged, 1 if rec.status in UPLOADING else 0


def _load(txn: Any, db: Any, owner: str | None) -> list[int]:
    raw = txn.get(_key(owner), db=db)
    return [0, 0, 0, 0] if raw is None else list(unpack(raw))


def _add(txn: Any, db: Any, owner: str | None, deltas: tuple[int, ...]) -> None:
    if not any(deltas):
        return
    values = [a + b for a, b in zip(_load(txn, db, owner), deltas)]
    if any(values):
        txn.put(_key(owner), pack(values), db=db)
    else:
        txn.delete(_key(owner), db=db)


def account(txn: Any, db: Any, old: ImageRecord | None, new: ImageRecord) -> None:
    """Apply the change old -> new of one record to its owners' counters (in the
    transaction that stores the change)."""
    before, after = contribution(old), contribution(new)
    if before == after and (old is None or old.owner == new.owner):
        return
    if old is not None and old.owner != new.owner:
        _add(txn, db, old.owner, tuple(-v for v in before))
        _add(txn, db, new.owner, after)
        return
    _add(txn, db, new.owner, tuple(a - b for a, b in zip(after, before)))


def usage(txn: Any, db: Any, owner: str | None) -> Usage:
    v = _load(txn, db, owner)
    return Usage(v[_COUNT], v[_BYTES], v[_STAGED], v[_UPLOADING])


def limit_of(cfg: EngineConfig, resource: str) -> int | None:
    """The configured limit (images, or MiB for sizes as Glance counts); None = unlimited."""
    value = getattr(cfg, resource)
    return None if value is None or value < 0 else value


def any_limit(cfg: EngineConfig) -> bool:
    return any(limit_of(cfg, r) is not None for r in RESOURCES)


def enforce(txn: Any, db: Any, cfg: EngineConfig, owner: str | None,
            deltas: dict[str, int]) -> None:
    """Raise TooLarge if usage + delta passes the limit of any resource in `deltas` (sizes in
    bytes). Checked over the counters as this transaction sees them."""
    current = usage(txn, db, owner)
    over = []
    for resource, delta in deltas.items():
        limit = limit_of(cfg, resource)
        if limit is None:
            continue
        used = getattr(current, resource)
        if resource in ("image_size_total", "image_stage_total"):
            if used + delta > limit * MiB:
                over.append((resource, limit, used // MiB, -(-delta // MiB)))
        elif used + delta > limit:
            over.append((resource, limit, used, delta))
    if over:
        infos = ", ".join(f"Resource {r} is over limit of {lim} due to current usage {u} "
                          f"and delta {d}" for r, lim, u, d in over)
        raise TooLarge("The request returned a 413 Request Entity Too Large. This generally "
                       "means that rate limiting or a quota threshold was breached.\n\n"
                       "The response body:\n"
                       f"Project {owner} is over a limit for [{infos}]")


def report(txn: Any, db: Any, cfg: EngineConfig, owner: str | None) -> dict[str, dict]:
    """Glance's /v2/info/usage document body: limit and usage per resource (MiB for sizes);
    an unlimited resource shows limit -1."""
    current = usage(txn, db, owner)
    out = {}
    for resource in RESOURCES:
        limit = limit_of(cfg, resource)
        used = getattr(current, resource)
        if resource in ("image_size_total", "image_stage_total"):
            used //= MiB
        out[resource] = {"limit": -1 if limit is None else limit, "usage": used}
    return out


def rebuild(txn: Any, db: Any, images_db: Any) -> None:
    """Recount every project from the records (a store written before the counters)."""
    with txn.cursor(db=db) as cur:
        keys = [bytes(k) for k, _ in cur]
    for key in keys:
        txn.delete(key, db=db)
    with txn.cursor(db=images_db) as cur:
        records = [decode_image(bytes(v)) for _, v in cur]
    for rec in records:
        account(txn, db, None, rec)
