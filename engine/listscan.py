# Listing images, the walk: range scans over the `imgidx` indexes (engine/imgindex.py holds
# the keys) that produce one page for a planned query (engine/listplan.py).
# Invariants:
# - A page is a range scan (reverse for desc) over a sort index or created_at-ordered
#   partitions; nothing sorts the whole set in Python.
# - Index scans only produce candidates; every candidate is checked against the full
#   predicate (filters + visibility), so choosing a narrower index never changes the result.
# - Multi-key sorts scan the first key's index and sort each run of equal first-key values
#   in Python (by one byte-string key that honours every direction).
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from tessera.engine.errors import Forbidden, InvalidInput
from tessera.engine.imgindex import (component, invert, sort_prefix, sort_value, successor,
                                     ts8)
from tessera.engine.listplan import (ListPage, ListQuery, MemberStatus, QueryPlan,
                                     full_sort)
from tessera.engine.records import ImageRecord, decode_image, id_key, is_uuid

_TAIL = 24  # ts8 + id16
# Partitions with at most this many entries are listed by sorting them in Python when the
# sort is not their created_at order.
SMALL_SET = 1000


def _position(cursor: Any, prefix: bytes, desc: bool, lo: bytes | None,
              hi: bytes | None) -> bool:
    """Put the cursor on the first key to visit: asc, the first key >= lo (or the prefix);
    desc, the last key < hi (or past the prefix). False if there is none."""
    if desc:
        ok = cursor.set_range(hi if hi is not None else successor(prefix))
        return cursor.prev() if ok else cursor.last()
    return cursor.set_range(lo if lo is not None else prefix)


def _scan(cursor: Any, prefix: bytes, desc: bool, lo: bytes | None,
          hi: bytes | None) -> Iterator[bytes]:
    """Positions (key minus prefix) under `prefix`, from where _position puts the cursor."""
    plen = len(prefix)
    ok = _position(cursor, prefix, desc, lo, hi)
    step = cursor.prev if desc else cursor.next
    while ok:
        key = cursor.key()
        if not key.startswith(prefix):
            return
        yield key[plen:]
        ok = step()


def _merge(streams: list[Iterator[bytes]], desc: bool) -> Iterator[bytes]:
    if len(streams) == 1:
        yield from streams[0]
        return
    last = None
    for pos in heapq.merge(*streams, reverse=desc):
        if pos != last:
            yield pos
            last = pos


def list_images(txn: Any, images_db: Any, idx_db: Any, q: ListQuery,
                member_status: MemberStatus,
                decode: Callable[[bytes], ImageRecord] = decode_image) -> ListPage:
    order = full_sort(q.sort)
    plan = QueryPlan(q, member_status)
    limit = q.limit
    marker = None
    if q.marker is not None:
        raw = txn.get(id_key(q.marker), db=images_db) if is_uuid(q.marker) else None
        marker = decode_image(raw) if raw is not None else None
        if marker is None or marker.status == "deleted":
            raise InvalidInput(f"No image found with ID {q.marker}")
        if not plan.admin and not QueryPlan(
                ListQuery(q.viewer_project, False, {"visibility": "all",
                                                    "member_status": "all"}),
                member_status).visible(txn, marker):
            raise Forbidden(f"Forbidding request, image {q.marker} not visible")
    if limit <= 0:
        return ListPage([], None)
    if plan.ids is not None:
        keys = [id_key(image_id) for image_id in dict.fromkeys(plan.ids)]
        out = _list_candidates(txn, images_db, plan, order, marker, limit, keys, decode)
    else:
        out = _list_scan(txn, images_db, idx_db, plan, order, marker, limit, decode)
    return ListPage(out, out[-1].id if len(out) == limit else None)


def _full_key(rec: ImageRecord, order: list[tuple[str, str]]) -> bytes:
    parts = []
    for key, direction in order:
        comp = component(rec, key)
        parts.append(comp if direction == "asc" else invert(comp))
    return b"".join(parts)


# Python values that order like the index encodings (None first), for one-direction sorts.
_PY_KEYS: dict[str, Callable[[ImageRecord], Any]] = {
    "name": lambda r: (r.name is not None, r.name or ""),
    "status": lambda r: r.status,
    "container_format": lambda r: (r.container_format is not None, r.container_format or ""),
    "disk_format": lambda r: (r.disk_format is not None, r.disk_format or ""),
    "size": lambda r: (r.size is not None, r.size or 0),
    "id": lambda r: r.id,
    "created_at": lambda r: round(r.created_at * 1_000_000),
    "updated_at": lambda r: round(r.updated_at * 1_000_000),
}


class _Order:
    """The full sort order as a key function for Python sorts: plain values when every
    direction agrees (sorted with `reverse`), else one byte string with desc parts
    inverted."""

    def __init__(self, order: list[tuple[str, str]]) -> None:
        dirs = {d for _, d in order}
        if len(dirs) == 1:
            self.reverse = dirs == {"desc"}
            fns = [_PY_KEYS[k] for k, _ in order]
            self.key: Callable[[ImageRecord], Any] = lambda r: [f(r) for f in fns]
        else:
            self.reverse = False
            self.key = lambda r: _full_key(r, order)

    def sort(self, rows: list[tuple[Any, ImageRecord]]) -> None:
        rows.sort(key=lambda kr: kr[0], reverse=self.reverse)

    def after(self, k: Any, marker_key: Any) -> bool:
        return k < marker_key if self.reverse else k > marker_key


def _list_candidates(txn: Any, images_db: Any, plan: QueryPlan,
                     order: list[tuple[str, str]],
                     marker: ImageRecord | None, limit: int, keys: list[bytes],
                     decode: Callable[[bytes], ImageRecord]) -> list[ImageRecord]:
    """A small candidate set (id filters, a narrow partition): fetch every record, order
    them in Python."""
    by = _Order(order)
    recs = []
    for key in keys:
        raw = txn.get(key, db=images_db)
        if raw is not None:
            rec = decode(raw)
            if plan.match(txn, rec):
                recs.append((by.key(rec), rec))
    by.sort(recs)
    if marker is not None:
        mk = by.key(marker)
        recs = [kr for kr in recs if by.after(kr[0], mk)]
    return [r for _, r in recs[:limit]]


def _small_set(txn: Any, idx_db: Any, prefixes: list[bytes]) -> list[bytes] | None:
    """The image keys of the partitions, if they hold at most SMALL_SET entries."""
    keys: dict[bytes, None] = {}
    seen = 0
    for prefix in prefixes:
        for pos in _scan(txn.cursor(db=idx_db), prefix, False, None, None):
            seen += 1
            if seen > SMALL_SET:
                return None
            keys[pos[-16:]] = None
    return list(keys)


def _list_scan(txn: Any, images_db: Any, idx_db: Any, plan: QueryPlan,
               order: list[tuple[str, str]], marker: ImageRecord | None,
               limit: int, decode: Callable[[bytes], ImageRecord]) -> list[ImageRecord]:
    first, direction = order[0]
    desc = direction == "desc"
    keys = [k for k, _ in order]
    order = order[:keys.index("id") + 1]  # ids are unique: later keys never decide
    natural = [first] + [k for k in ("created_at", "id") if k != first]
    # The index key is (first, created_at, id), so it is the full order when nothing else
    # is sorted on and every direction agrees.
    single = [k for k, _ in order] == natural[:len(order)] and len(order) == len(natural) \
        and all(d == direction for _, d in order) or first == "id"
    if first == "created_at" and single:
        prefixes = plan.partitions()
        mpos = ts8(marker.created_at) + id_key(marker.id) if marker is not None else None
    else:
        # A narrow viewer or filter (few candidates in its partitions) is cheaper to sort
        # in Python than to find by walking the sort key's whole index.
        narrow = plan.partitions()
        if narrow != [sort_prefix("created_at")]:
            keys = _small_set(txn, idx_db, narrow)
            if keys is not None:
                return _list_candidates(txn, images_db, plan, order, marker, limit, keys,
                                        decode)
        prefixes = [sort_prefix(first)]
        mpos = (sort_value(marker, first) + ts8(marker.created_at) + id_key(marker.id)
                if marker is not None else None)
    out: list[ImageRecord] = []
    get = txn.get
    match = plan.match
    if single and len(prefixes) == 1:  # the common case, inlined: one cursor, no merge
        prefix = prefixes[0]
        cursor = txn.cursor(db=idx_db)
        lo = hi = None
        if mpos is not None:
            lo, hi = prefix + mpos + b"\x00", prefix + mpos
        ok = _position(cursor, prefix, desc, lo, hi)
        step, key_of = (cursor.prev if desc else cursor.next), cursor.key
        covering = prefix == sort_prefix("created_at")  # values are the records
        value_of = cursor.value
        while ok:
            key = key_of()
            if not key.startswith(prefix):
                break
            rec = decode(value_of() if covering else get(key[-16:], db=images_db))
            if match(txn, rec):
                out.append(rec)
                if len(out) == limit:
                    break
            ok = step()
        return out
    if single:
        streams = []
        for prefix in prefixes:
            lo = hi = None
            if mpos is not None:
                lo, hi = prefix + mpos + b"\x00", prefix + mpos
            streams.append(_scan(txn.cursor(db=idx_db), prefix, desc, lo, hi))
        for pos in _merge(streams, desc):
            rec = decode(get(pos[-16:], db=images_db))
            if match(txn, rec):
                out.append(rec)
                if len(out) == limit:
                    break
        return out
    # Multi-key sort: runs of equal first-key values, each ordered in Python.
    prefix = prefixes[0]
    lo = hi = None
    mkey = None
    by = _Order(order)
    cut = 16 if first == "created_at" else _TAIL  # created_at's value is the ts8 itself
    if marker is not None:
        group = prefix + mpos[:-cut]
        lo, hi = group, successor(group)
        mkey = by.key(marker)
    run: list[tuple[Any, ImageRecord]] = []
    run_value = None

    def flush() -> bool:
        by.sort(run)
        for k, rec in run:
            if mkey is not None and not by.after(k, mkey):
                continue
            out.append(rec)
            if len(out) == limit:
                return True
        run.clear()
        return False

    for pos in _scan(txn.cursor(db=idx_db), prefix, desc, lo, hi):
        value = pos[:-cut]
        if value != run_value:
            if run and flush():
                return out
            run_value = value
        rec = decode(get(pos[-16:], db=images_db))
        if match(txn, rec):
            run.append((by.key(rec), rec))
    if run:
        flush()
    return out
