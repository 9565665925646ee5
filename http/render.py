# Records to Glance's JSON, and the few response shapes every handler shares.
# Invariants: the image view is Glance 33's (extra properties as top-level keys first, then
# the core fields in Glance's order, then self/file/schema); `os_glance_stage_host` and
# `os_glance_hash_op_host` are never shown, nor the internal BLAKE3 digest; `locations` and
# `direct_url` only when the operator turned on Glance's show_multiple_locations /
# show_image_direct_url (off by default: OSSN-0065, OSSN-0090) and `stores` only with
# multi-store; timestamps are
# `YYYY-MM-DDTHH:MM:SSZ`; JSON is UTF-8 with ensure_ascii=False and Content-Type
# application/json without charset.
from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from tessera.engine.records import ImageRecord, MemberRecord
from tessera.http.message import Response

HIDDEN_PROPERTIES = frozenset({"os_glance_stage_host", "os_glance_hash_op_host"})


def isotime(epoch: float) -> str:
    return _isotime(int(epoch))


@lru_cache(maxsize=4096)      # listings repeat the same seconds; formatting is the hot spot
def _isotime(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def image_view(rec: ImageRecord, default_store: str | None = None, *,
               show_locations: bool = False, show_direct_url: bool = False) -> dict[str, Any]:
    """Glance's image JSON; with multi-store (`default_store` given) an image holding data
    also shows `stores`, a comma list ("default" in older records names the default).
    `show_locations`: `locations` ([] when none); `show_direct_url`: `direct_url`, the first
    location's URL, when the image has one."""
    view: dict[str, Any] = {}
    if rec.properties:
        for key, value in rec.properties.items():
            if key not in HIDDEN_PROPERTIES:
                view[key] = "" if value is None else value
    view.update({
        "name": rec.name,
        "disk_format": rec.disk_format,
        "container_format": rec.container_format,
        "visibility": rec.visibility,
        "size": rec.size,
        "virtual_size": rec.virtual_size,
        "status": rec.status,
        "checksum": rec.checksum,
        "protected": rec.protected,
        "min_ram": rec.min_ram,
        "min_disk": rec.min_disk,
        "owner": rec.owner,
        "os_hidden": rec.os_hidden,
        "os_hash_algo": rec.os_hash_algo,
        "os_hash_value": rec.os_hash_value,
        "id": rec.id,
        "created_at": isotime(rec.created_at),
        "updated_at": isotime(rec.updated_at),
    })
    if show_locations:
        view["locations"] = [{"url": url, "metadata": dict(meta)} for url, meta in rec.locations]
    if show_direct_url and rec.locations:
        view["direct_url"] = rec.locations[0][0]
    view.update({
        "tags": list(rec.tags),
        "self": f"/v2/images/{rec.id}",
        "file": f"/v2/images/{rec.id}/file",
        "schema": "/v2/schemas/image",
    })
    if default_store is not None and rec.stores:
        view["stores"] = ",".join(default_store if s == "default" else s for s in rec.stores)
    return view


class ImageJsonCache:
    """Rendered image JSON by record version: listings send the same records again and again,
    and rendering (view + JSON encoding) is most of a listing's cost.

    A version is (id, updated_at, status, size, visibility): the engine stamps updated_at on
    every change of a record, the other fields guard against a clock that repeats. Bounded:
    the oldest entries go first past `capacity`."""

    def __init__(self, capacity: int = 8192, default_store: str | None = None, *,
                 show_locations: bool = False, show_direct_url: bool = False) -> None:
        self.capacity = capacity
        self.default_store = default_store     # multi-store: show `stores` (image_view)
        self.show_locations = show_locations
        self.show_direct_url = show_direct_url
        self._items: dict[tuple, bytes] = {}

    def view(self, rec: ImageRecord) -> dict[str, Any]:
        """The image's JSON view with this application's settings."""
        return image_view(rec, self.default_store, show_locations=self.show_locations,
                          show_direct_url=self.show_direct_url)

    def __call__(self, rec: ImageRecord) -> bytes:
        key = (rec.id, rec.updated_at, rec.status, rec.size, rec.visibility, rec.stores,
               len(rec.locations))
        items = self._items
        data = items.get(key)
        if data is None:
            data = dumps(self.view(rec))
            if len(items) >= self.capacity:
                del items[next(iter(items))]
            items[key] = data
        return data


def images_page(fragments: list[bytes], first: str, next_link: str | None) -> Response:
    """The list body exactly as json.dumps would write it, from pre-rendered images."""
    tail = b'], "first": ' + dumps(first) + b', "schema": "/v2/schemas/images"'
    if next_link is not None:
        tail += b', "next": ' + dumps(next_link)
    body = b'{"images": [' + b", ".join(fragments) + tail + b"}"
    return Response(200, [("Content-Type", "application/json")], body)


def member_view(m: MemberRecord) -> dict[str, Any]:
    return {
        "member_id": m.member_id,
        "image_id": m.image_id,
        "status": m.status,
        "created_at": isotime(m.created_at),
        "updated_at": isotime(m.updated_at),
        "schema": "/v2/schemas/member",
    }


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def json_response(obj: Any, status: int = 200,
                  headers: list[tuple[str, str]] | None = None) -> Response:
    out = [("Content-Type", "application/json")]
    if headers:
        out.extend(headers)
    return Response(status, out, dumps(obj))


def no_content() -> Response:
    """A 204 as most Glance routes send it (a WebOb artefact: HTML content type, length 0)."""
    return Response(204, [("Content-Type", "text/html; charset=UTF-8"),
                          ("Content-Length", "0")], b"")


def bare_no_content() -> Response:
    """A 204 with no entity headers (member delete, download of an image without data)."""
    return Response(204, [], b"")
