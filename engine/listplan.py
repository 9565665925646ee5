# Listing images, the query side: the ListQuery/ListPage values, the full sort order
# (Glance's tie-breakers), the filter parsing into one predicate (filters + visibility), and
# the created_at-ordered partitions whose union holds every result of a query.
# Invariants:
# - A bad filter, sort key or direction raises InvalidInput here, before any scan.
# - The predicate (`QueryPlan.match`) is the whole truth: a partition or index only narrows
#   the candidates, every candidate is still checked, so a narrower choice never changes a
#   result.
# - Nothing here touches LMDB except through the member_status callback.
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.engine.errors import InvalidInput
from tessera.engine.imgindex import SORT_KEYS, part_prefix, sort_prefix
from tessera.engine.records import ImageRecord, is_uuid
from tessera.engine.states import UNLISTED

VISIBILITIES = ("public", "private", "shared", "community")
MEMBER_STATUSES = ("pending", "accepted", "rejected")
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


class QueryPlan:
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

