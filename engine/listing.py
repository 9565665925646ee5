# Listing images: the query planner and the range scans over the `imgidx` indexes
# (engine/imgindex.py holds the keys).
# Invariants:
# - A page is a range scan (reverse for desc) over a sort index or created_at-ordered
#   partitions; nothing sorts the whole set in Python.
# - Index scans only produce candidates; every candidate is checked against the full
#   predicate (filters + visibility), so choosing a narrower index never changes the result.
# - Multi-key sorts scan the first key's index and sort each run of equal first-key values
#   in Python (by one byte-string key that honours every direction).
# - A cached page (PageCache) is only served to a reader at the same LMDB transaction id it
#   was computed at, i.e. with no commit in between.
from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.engine.errors import Forbidden, InvalidInput
from tessera.engine.imgindex import (SORT_KEYS, component, invert, part_prefix, sort_prefix,
                                     sort_value, successor, ts8)
from tessera.engine.records import ImageRecord, decode_image, id_key, is_uuid
from tessera.engine.states import UNLISTED

VISIBILITIES = ("public", "private", "shared", "community")
MEMBER_STATUSES = ("pending", "accepted", "rejected")
_TAIL = 24  # ts8 + id16
# Partitions with at most this many entries are listed by sorting them in Python when the
# sort is not their created_at order.
SMALL_SET = 1000
_EQ_FILTERS = ("name", "id", "status", "container_format", "disk_format", "owner",
               "checksum", "os_hash_value")
_RANGE_COLUMNS = ("size", "virtual_size", "min_disk", "min_ram")
_TIME_OPS = {
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
}


# -- the query -------------------------------------------------------------------------

@dataclass(frozen=True)
class ListQuery:
    viewer_project: str | None
    viewer_is_admin: bool
    filters: Mapping[str, Any] = field(default_factory=dict)
    sort: tuple[tuple[str, str], ...] = (("created_at", "desc"),)
    limit: int = 25
    marker: str | None = None


@dataclass(frozen=True)
class ListPage:
    images: list[ImageRecord]
    next_marker: str | None


MemberStatus = Callable[[Any, str, str], "str | None"]  # (txn, image_id, project) -> status


def full_sort(sort: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The user's keys plus Glance's tie-breakers (created_at, then id)."""
    if not sort:
        sort = (("created_at", "desc"),)
    out: list[tuple[str, str]] = []
    for key, direction in sort:
        if key not in SORT_KEYS:
            raise InvalidInput(f"Invalid sort key: {key}. It must be one of the following: "
                               f"{', '.join(SORT_KEYS)}.")
        if direction not in ("asc", "desc"):
            raise InvalidInput(f"Invalid sort direction: {direction}")
        if key not in (k for k, _ in out):
            out.append((key, direction))
    dirs = {d for _, d in sort}
    tie = dirs.pop() if len(dirs) == 1 else "desc"
    for key in ("created_at", "id"):
        if key not in (k for k, _ in out):
            out.append((key, tie))
    return out


def _eq_check(name: str, want: Any) -> Callable[[ImageRecord], bool]:
    if isinstance(want, tuple) and len(want) == 2 and want[0] == "in":
        values = frozenset(want[1])
        return lambda r: getattr(r, name) in values
    return lambda r: getattr(r, name) == want


def _prop_check(name: str, want: Any) -> Callable[[ImageRecord], bool]:
    if isinstance(want, tuple) and len(want) == 2 and want[0] == "in":
        values = frozenset(want[1])
        return lambda r: r.properties.get(name) in values
    return lambda r: r.properties.get(name) == want


def _time_check(name: str, spec: Any) -> Callable[[ImageRecord], bool]:
    try:
        op, when = spec
        cmp = _TIME_OPS[op]
        when = int(when)
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f'Bad "{name}" query filter format. '
                           f'Use ISO 8601 DateTime notation.') from None
    return lambda r: cmp(int(getattr(r, name)), when)  # second precision, as rendered


def _range_check(column: str, bound: str, value: Any) -> Callable[[ImageRecord], bool]:
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"Invalid value for {column}_{bound}: {value}") from None
    if bound == "min":
        return lambda r: getattr(r, column) is not None and getattr(r, column) >= limit
    return lambda r: getattr(r, column) is not None and getattr(r, column) <= limit


class _Plan:
    """The predicate and the candidate streams of one query."""

    def __init__(self, q: ListQuery, member_status: MemberStatus) -> None:
        filters = dict(q.filters)
        self.admin = q.viewer_is_admin
        self.project = q.viewer_project
        vis = filters.pop("visibility", None)
        if vis is not None and vis not in VISIBILITIES and vis != "all":
            raise InvalidInput(f"Invalid visibility value: {vis}")
        self.vis = vis
        mstatus = filters.pop("member_status", "accepted")
        if mstatus not in MEMBER_STATUSES and mstatus != "all":
            raise InvalidInput(f"Invalid status value: {mstatus}")
        self.mstatus = mstatus
        self.member_status = member_status
        self.ids: list[str] | None = None
        checks: list[Callable[[ImageRecord], bool]] = []
        hidden = filters.pop("os_hidden", False)
        if not isinstance(hidden, bool):
            raise InvalidInput("Invalid value for os_hidden filter")
        checks.append(lambda r: r.os_hidden is hidden)
        self.hidden = hidden
        if "protected" in filters:
            want = filters.pop("protected")
            if not isinstance(want, bool):
                raise InvalidInput("Invalid value for protected filter")
            checks.append(lambda r: r.protected is want)
        tags = filters.pop("tags", filters.pop("tag", ()))
        if isinstance(tags, str):
            tags = (tags,)
        self.tags = tuple(tags)
        for tag in self.tags:
            checks.append(lambda r, t=tag: t in r.tags)
        self.owner = filters.get("owner")
        if isinstance(self.owner, tuple):
            self.owner = None
        want_id = filters.get("id")
        if want_id is not None:
            wanted = list(want_id[1]) if isinstance(want_id, tuple) else [want_id]
            self.ids = [i.lower() for i in wanted if is_uuid(i)]
        for name in ("created_at", "updated_at"):
            if name in filters:
                checks.append(_time_check(name, filters.pop(name)))
        for name, value in filters.items():
            if name in _EQ_FILTERS:
                if name == "id":
                    value = (("in", [v.lower() for v in value[1]]) if isinstance(value, tuple)
                             else value.lower())
                checks.append(_eq_check(name, value))
            elif name.endswith(("_min", "_max")) and name[:-4] in _RANGE_COLUMNS:
                checks.append(_range_check(name[:-4], name[-3:], value))
            elif name == "changes-since":
                raise InvalidInput("The 'changes-since' filter is no longer available on v2.")
            else:
                checks.append(_prop_check(name, value))
        self.checks = checks
        self.match = self._match_fn()

    # visibility (glance-api.md 1.3)
    def visible(self, txn: Any, r: ImageRecord) -> bool:
        vis, p = self.vis, self.project
        if self.admin:
            if vis is None:
                return r.visibility != "community" or r.owner == p
            return vis == "all" or r.visibility == vis
        if vis is None and r.visibility == "community" and r.owner != p:
            return False
        if vis not in (None, "all") and r.visibility != vis:
            return False
        if r.visibility in ("public", "community"):
            return True
        if p is None:
            return False
        if r.owner == p:
            return True
        if r.visibility != "shared":
            return False
        status = self.member_status(txn, r.id, p)
        return status is not None and (self.mstatus == "all" or status == self.mstatus)

    def _visible_fn(self) -> Callable[[Any, ImageRecord], bool]:
        """`visible`, specialised for admins (no member lookups, no branches per record)."""
        if not self.admin:
            return self.visible
        vis, p = self.vis, self.project
        if vis is None:
            return lambda txn, r: r.visibility != "community" or r.owner == p
        if vis == "all":
            return lambda txn, r: True
        return lambda txn, r: r.visibility == vis

    def _match_fn(self) -> Callable[[Any, ImageRecord], bool]:
        """The full predicate as one closure (it runs once per scanned index entry)."""
        checks = tuple(self.checks)
        visible = self._visible_fn()
        unlisted = UNLISTED
        hidden, p = self.hidden, self.project
        if len(checks) == 1 and self.admin and self.vis is None:  # the default listing
            return lambda txn, r: (r.status not in unlisted and r.os_hidden is hidden
                                   and (r.visibility != "community" or r.owner == p))
        if len(checks) == 1:  # only the os_hidden check
            only = checks[0]
            return lambda txn, r: (r.status not in unlisted and only(r)
                                   and visible(txn, r))

        def match(txn: Any, r: ImageRecord) -> bool:
            if r.status in unlisted:
                return False
            for check in checks:
                if not check(r):
                    return False
            return visible(txn, r)
        return match

    def partitions(self) -> list[bytes]:
        """Prefixes of created_at-ordered partitions whose union holds every result."""
        if self.owner is not None:
            return [part_prefix("owner", self.owner)]
        if self.tags:
            return [part_prefix("tag", self.tags[0])]
        vis, p = self.vis, self.project
        if self.admin:
            return [part_prefix("visibility", vis)] if vis not in (None, "all") \
                else [sort_prefix("created_at")]
        own = [part_prefix("owner", p)]  # p None: community images owned by nobody
        mem = [part_prefix("member", p)] if p is not None else []
        if vis is None:
            return [part_prefix("visibility", "public")] + own + mem
        if vis == "all":
            return [part_prefix("visibility", "public"),
                    part_prefix("visibility", "community")] + own + mem
        if vis in ("public", "community"):
            return [part_prefix("visibility", vis)]
        if vis == "private":
            return own
        return own + mem  # shared


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
    plan = _Plan(q, member_status)
    limit = q.limit
    marker = None
    if q.marker is not None:
        raw = txn.get(id_key(q.marker), db=images_db) if is_uuid(q.marker) else None
        marker = decode_image(raw) if raw is not None else None
        if marker is None or marker.status == "deleted":
            raise InvalidInput(f"No image found with ID {q.marker}")
        if not plan.admin and not _Plan(
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


def _list_candidates(txn: Any, images_db: Any, plan: _Plan, order: list[tuple[str, str]],
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


def _list_scan(txn: Any, images_db: Any, idx_db: Any, plan: _Plan,
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


class PageCache:
    """Recent pages keyed by (query, LMDB transaction id).

    A read transaction's id is the id of the last committed write, so a page computed at id
    T is exactly the page any reader at id T would compute: a hit needs no invalidation
    logic. Any commit (of anything) moves the id on and the entry is simply recomputed.
    Used from the event-loop thread only.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._map: OrderedDict[Any, tuple[int, ListPage]] = OrderedDict()

    @staticmethod
    def key(q: ListQuery) -> Any:
        try:
            key = (q.viewer_project, q.viewer_is_admin, q.sort, q.limit, q.marker,
                   tuple(sorted(q.filters.items())))
            hash(key)
        except TypeError:  # an unhashable filter value: not cached
            return None
        return key

    def get(self, key: Any, txn_id: int) -> ListPage | None:
        hit = self._map.get(key)
        if hit is None or hit[0] != txn_id:
            return None
        self._map.move_to_end(key)
        return ListPage(list(hit[1].images), hit[1].next_marker)

    def put(self, key: Any, txn_id: int, page: ListPage) -> None:
        self._map[key] = (txn_id, ListPage(list(page.images), page.next_marker))
        self._map.move_to_end(key)
        if len(self._map) > self._size:
            self._map.popitem(last=False)
