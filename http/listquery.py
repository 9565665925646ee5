# The query string of GET /v2/images parsed into the engine's ListQuery, and the page links,
# with Glance's rules and messages (glance-api.md 1.3).
# Invariants: pure functions of the query pairs and the caller; every malformed parameter is
# an HTTPError(400) with Glance's message before the engine is asked anything; links are
# relative paths built from the original query the way Glance's serializer builds them
# (one value per key -- the last --, in first-seen key order, urlencoded, marker replaced).
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from tessera.engine.listing import ListQuery
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id",
             "created_at", "updated_at")
LIMIT_DEFAULT = 25
LIMIT_MAX = 1000
IN_FILTERS = ("name", "id", "status", "container_format", "disk_format")
VISIBILITIES = ("community", "public", "private", "shared", "all")
MEMBER_STATUSES = ("pending", "accepted", "rejected", "all")
TIME_OPS = ("gt", "gte", "eq", "neq", "lt", "lte")
RANGE_COLUMNS = ("size", "virtual_size", "min_disk", "min_ram")
_IN_VALUE = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)",?|([^,]+),?|,')


def _bad(message: str) -> HTTPError:
    return HTTPError(400, message)


class _Params:
    """Webob's MultiDict semantics for the few operations Glance's deserializer uses."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.items = list(pairs)

    def __contains__(self, key: str) -> bool:
        return any(k == key for k, _ in self.items)

    def pop(self, key: str, default: Any = None) -> Any:
        """Remove and return the first value of `key` (webob pops the first occurrence)."""
        for i, (k, v) in enumerate(self.items):
            if k == key:
                del self.items[i]
                return v
        return default

    def pop_all(self, key: str) -> list[str]:
        values = [v for k, v in self.items if k == key]
        self.items = [(k, v) for k, v in self.items if k != key]
        return values

    def last_values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.items:
            out[k] = v        # a dict keeps the first-seen position, takes the last value
        return out


def parse_limit(value: str | None) -> int:
    if not value:  # Glance ignores an empty limit
        return LIMIT_DEFAULT
    try:
        limit = int(value)
    except ValueError:
        raise _bad("limit param must be an integer") from None
    if limit < 0:
        raise _bad("limit param must be positive")
    return min(limit, LIMIT_MAX)


def _sort_key(key: str) -> str:
    if key not in SORT_KEYS:
        raise _bad(f"Invalid sort key: {key}. It must be one of the following: "
                   f"{', '.join(SORT_KEYS)}.")
    return key


def _sort_dir(direction: str) -> str:
    if direction not in ("asc", "desc"):
        raise _bad(f"Invalid sort direction: {direction}")
    return direction


def parse_sort(params: _Params) -> tuple[tuple[str, str], ...]:
    keys: list[str] = []
    dirs: list[str] = []
    if "sort" in params:
        if "sort_key" in params or "sort_dir" in params:
            raise _bad("Old and new sorting syntax cannot be combined")
        for part in params.pop("sort").strip().split(","):
            key, _, direction = part.partition(":")
            keys.append(_sort_key(key.strip()))
            dirs.append(_sort_dir(direction.strip() if direction else "desc"))
    else:
        keys = [_sort_key(k.strip()) for k in params.pop_all("sort_key")]
        dirs = [_sort_dir(d.strip()) for d in params.pop_all("sort_dir")]
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise _bad("Number of sort dirs does not match the number of sort keys")
        keys = keys or ["created_at"]
        dirs = dirs or ["desc"]
        if len(dirs) == 1:
            dirs = dirs * len(keys)
    return tuple(zip(keys, dirs))


def split_in_values(value: str) -> list[str]:
    """Glance's `in:` operator: comma-separated values, double quotes around values that
    contain commas; unbalanced or misplaced quotes are a 400."""
    opened = True
    for i, ch in enumerate(value):
        if ch != '"' or (i and value[i - 1] == "\\"):
            continue
        if opened:
            if i and value[i - 1] != ",":
                raise _bad(f"Invalid filter value {value}. There is no comma before opening "
                           f"quotation mark.")
        elif i + 1 != len(value) and value[i + 1] != ",":
            raise _bad(f"Invalid filter value {value}. There is no comma after closing "
                       f"quotation mark.")
        opened = not opened
    if not opened:
        raise _bad(f"Invalid filter value {value}. The quote is not closed.")
    return [quoted or plain for quoted, plain in _IN_VALUE.findall(value)]


def parse_isotime(value: str) -> datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def parse_time_filter(name: str, expression: str) -> tuple[str, int]:
    """`[op:]ISO8601` -> (op, epoch seconds), as Glance's split_filter_op + parse_isotime."""
    left, sep, right = expression.partition(":")
    op, when = "eq", expression
    if sep:
        try:
            parse_isotime(expression)
        except ValueError:
            op, when = left, right
    try:
        moment = parse_isotime(when)
    except ValueError:
        raise _bad(f'Bad "{name}" query filter format. Use ISO 8601 DateTime notation.') \
            from None
    if op not in TIME_OPS:
        raise _bad(f"Unable to filter by unknown operator '{op}'.")
    return op, int(moment.timestamp())


def _parse_bool(name: str, value: str) -> bool:
    """Glance accepts exactly 'true'/'false' (os_hidden case-insensitively)."""
    if name == "os_hidden":
        value = value.lower()
    if value not in ("true", "false"):
        raise _bad(f"Invalid value '{value}' for '{name}' filter. Valid values are "
                   f"'true' or 'false'.")
    return value == "true"


def parse_filters(params: _Params) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    tags = params.pop_all("tag")
    if tags:
        filters["tags"] = tuple(tags)
    for key, value in params.last_values().items():
        if key == "changes-since":
            raise _bad('The "changes-since" filter is no longer available on v2.')
        if key == "visibility":
            if not value:                     # Glance ignores an empty visibility
                continue
            if value not in VISIBILITIES:
                raise _bad(f"Invalid visibility value: {value}")
            filters[key] = value
        elif key in IN_FILTERS and value.startswith("in:"):
            filters[key] = ("in", split_in_values(value[3:]))
        elif key in ("created_at", "updated_at"):
            filters[key] = parse_time_filter(key, value)
        elif key in ("protected", "os_hidden"):
            filters[key] = _parse_bool(key, value)
        elif key.endswith(("_min", "_max")) and key[:-4] in RANGE_COLUMNS:
            try:
                filters[key] = int(value)
            except ValueError:
                raise _bad("Unable to filter on a range with a non-numeric value.") from None
        else:
            filters[key] = value
    return filters


def parse_list_query(pairs: list[tuple[str, str]], caller: Caller) -> ListQuery:
    params = _Params(pairs)
    limit = parse_limit(params.pop("limit"))
    marker = params.pop("marker")
    member_status = params.pop("member_status")
    if member_status is not None and member_status not in MEMBER_STATUSES:
        raise _bad(f"Invalid status: {member_status}")
    sort = parse_sort(params)
    filters = parse_filters(params)
    if member_status is not None:
        filters["member_status"] = member_status
    return ListQuery(viewer_project=caller.project_id, viewer_is_admin=caller.is_admin,
                     filters=filters, sort=sort, limit=limit, marker=marker or None)


def page_links(pairs: list[tuple[str, str]], next_marker: str | None) -> dict[str, str]:
    """Glance's `first` (and `next`) links: the original query, one value per key."""
    params = _Params(pairs).last_values()
    params.pop("marker", None)
    query = urlencode(params)
    links = {"first": "/v2/images" + (f"?{query}" if query else "")}
    if next_marker is not None:
        params["marker"] = next_marker
        links["next"] = "/v2/images?" + urlencode(params)
    return links
