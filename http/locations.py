# The locations API (glance-api.md 1.2, 4, 5.8): POST /v2/images/{id}/locations (Glance's
# new add-location API: 202 and a background `location_import` task) and GET
# /v2/images/{id}/locations (service role or admin only).
# Invariants: Glance's order of checks (body schema 400, image 404, status 409, policy 403,
# http store 403, validation data 400, URI filter 400, import lock 409); a URL is accepted
# only if it passes web-download's filter ([import]: schemes, hosts, ports, address
# classes) and only an http store's scheme (http, https) is ever read; the origin is read in
# the engine's background runner through the pinned fetch built here. The legacy PATCH
# operations on /locations (only with show_multiple_locations) are here too: add/replace on a
# queued image read the origin before answering (the image answered active, as Glance's);
# on an active image they only edit the list (reads verify every chunk against the manifest,
# so a location cannot change the image's bytes); remove is admin-only, never the last.
from __future__ import annotations

from typing import Any

from tessera.engine.errors import Conflict, Forbidden, InvalidInput, Unavailable
from tessera.engine.locations import check_validation_data
from tessera.engine.patch import PatchOp
from tessera.http import policy, webdownload
from tessera.http.access import find_image
from tessera.http.api_context import ApiContext
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError
from tessera.http.jsonbody import read_json
from tessera.http.message import Request, Response
from tessera.http.render import json_response

NO_HTTP_STORE = "http store must be enabled to use location API by normal user."


def _schema(detail: str) -> HTTPError:
    return HTTPError(400, f"Provided object does not match schema 'location': {detail}")


def _url(body: Any) -> str:
    if not isinstance(body, dict):
        raise _schema(f"{body!r} is not of type 'object'")
    if "url" not in body:
        raise _schema("'url' is a required property")
    url = body["url"]
    if not isinstance(url, str):
        raise _schema(f"{url!r} is not of type 'string'")
    return url


async def location_opener(api: ApiContext, url: str) -> Any:
    """The engine's opener of `url` (filtered, pinned, capped), or HTTPError 400."""
    refused = HTTPError(400, f"URI for add location does not pass filtering: {url}")
    target = webdownload.check_uri(url, api.imports)
    if target is None:
        raise refused
    try:
        address = await webdownload.pin(target, api.imports)
    except Unavailable:
        address = None               # unresolvable: the task fails, as web-download's
    else:
        if address is None:
            raise refused
    return webdownload.opener(target, address, api.imports, api.engine.cfg.image_size_cap)


def check_http_url(api: ApiContext, url: str) -> None:
    """Only an http store reads locations here: 403 without one, or for another scheme."""
    if api.locations is None or api.locations.http_store is None or \
            not url.lower().startswith(("http://", "https://")):
        raise Forbidden(NO_HTTP_STORE)


async def add_location(api: ApiContext, request: Request, caller: Caller) -> Response:
    body = await read_json(request, api.cfg.max_json_body)
    url = _url(body)
    rec = find_image(api.engine, caller, request.path_params["image_id"])
    if rec.status != "queued":
        raise Conflict(f"It's not allowed to add locations if image status is {rec.status}.")
    policy.enforce(caller, rec, policy.add_image_location(caller, rec), "add_image_location")
    check_http_url(api, url)
    try:
        validation = check_validation_data(body.get("validation_data"))
    except InvalidInput as exc:
        raise HTTPError(400, exc.message) from None
    opener = await location_opener(api, url)
    await api.locations.add(rec.id, url, validation=validation, opener=opener,
                            owner=caller.project_id or rec.owner, user_id=caller.user_id,
                            request_id=request.request_id)
    return Response(202, [("Content-Type", "text/html; charset=UTF-8"),
                          ("Content-Length", "0")], b"")


async def get_locations(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = find_image(api.engine, caller, request.path_params["image_id"])
    policy.enforce(caller, rec, policy.fetch_image_location(caller), "fetch_image_location")
    return json_response([{"url": url, "metadata": dict(meta)} for url, meta in rec.locations])


# -- the legacy PATCH operations on /locations (only with show_multiple_locations) ------------
LEGACY_HASHES = {"checksum": 32, "os_hash_algo": None, "os_hash_value": 128}


def is_location_op(op: PatchOp) -> bool:
    return op.path.strip().lstrip("/").split("/", 1)[0].strip() == "locations"


def _location(value: Any) -> tuple[str, dict, dict]:
    """(url, metadata, validation_data) of one location in a PATCH value (400 if malformed)."""
    if not isinstance(value, dict) or not isinstance(value.get("url"), str) or \
            not isinstance(value.get("metadata", {}), dict):
        raise HTTPError(400, "Invalid location")
    vd = value.get("validation_data") or {}
    if not isinstance(vd, dict) or set(vd) - set(LEGACY_HASHES):
        raise HTTPError(400, "Invalid validation_data")
    if vd.get("os_hash_algo", "sha512") != "sha512":
        raise HTTPError(400, "os_hash_algo must be sha512 (the hashing_algorithm)")
    for name, length in LEGACY_HASHES.items():
        v = vd.get(name)
        if length and v is not None and (not isinstance(v, str) or len(v) != length
                                          or not _hex(v)):
            raise HTTPError(400, f"{name} must be a hex string of {length} characters")
    return value["url"], dict(value.get("metadata", {})), vd


def _hex(v: str) -> bool:
    try:
        bytes.fromhex(v)
    except ValueError:
        return False
    return True


async def _checked(api: ApiContext, url: str) -> Any:
    """The opener of a legacy location URL; 400 `Invalid location` when it is refused."""
    if api.locations is None or api.locations.http_store is None or \
            not url.lower().startswith(("http://", "https://")):
        raise HTTPError(400, "Invalid location")
    try:
        return await location_opener(api, url)
    except HTTPError:
        raise HTTPError(400, "Invalid location") from None


def _position(part: str, count: int, allow_end: bool) -> int:
    if part == "-":
        return count if allow_end else count - 1
    if not part.isdigit() or int(part) > count or (int(part) == count and not allow_end):
        raise HTTPError(400, "Invalid position for "
                             f"{'adding' if allow_end else 'removing'} a location.")
    return int(part)


async def patch_locations(api: ApiContext, request: Request, caller: Caller, rec: Any,
                          ops: list[PatchOp]) -> Any:
    """Apply the /locations operations of a PATCH in order; the new record."""
    for op in ops:
        parts = [p.strip() for p in op.path.strip().lstrip("/").split("/")]
        if len(parts) != {"add": 2, "remove": 2, "replace": 1}[op.op]:
            raise HTTPError(400, f"Invalid JSON pointer for this resource: '{op.path}'")
        rec = api.engine.get_image(rec.id)
        if op.op == "remove":
            rec = await _remove(api, caller, rec, parts[1])
            continue
        policy.enforce(caller, rec, policy.owner_action(caller, rec), "set_image_location")
        if rec.status not in ("queued", "active"):
            verb = "add" if op.op == "add" else "replace"
            raise Conflict(f"It's not allowed to {verb} locations if image status is "
                           f"{rec.status}.")
        if op.op == "replace":
            if not isinstance(op.value, list):
                raise HTTPError(400, "Invalid location")
            if not op.value:
                raise Forbidden("Cannot set locations to empty list.")
            wanted = [_location(v) for v in op.value]
        else:
            wanted = [_location(op.value)]
        urls = [u for u, _, _ in wanted]
        if len(set(urls)) != len(urls):
            raise HTTPError(400, "Duplicate locations")
        openers = [await _checked(api, u) for u in urls]
        if rec.status == "queued":
            rec = await _attach(api, request, caller, rec, wanted, openers[0])
            continue
        for _, _, vd in wanted:
            for name, value in vd.items():
                if name != "os_hash_algo" and getattr(rec, name) != value:
                    raise Conflict(f"{name} of the location does not match the image's")
        fresh = tuple((u, m) for u, m, _ in wanted)
        if op.op == "replace":
            rec = await api.locations.edit(rec.id, lambda cur: fresh)
            continue

        def insert(cur: tuple, at: str = parts[1]) -> tuple:
            if urls[0] in [u for u, _ in cur]:
                raise InvalidInput(f"The location {urls[0]} already exists")
            i = _position(at, len(cur), True)
            return (*cur[:i], *fresh, *cur[i:])

        rec = await api.locations.edit(rec.id, insert)
    return rec


async def _attach(api: ApiContext, request: Request, caller: Caller, rec: Any,
                  wanted: list[tuple[str, dict, dict]], opener: Any) -> Any:
    """A queued image gets its first location: read it now (Glance answers with the image
    active); 400 `Invalid location` when the origin cannot be read or fails validation."""
    url, metadata, vd = wanted[0]
    validation = {k: v for k, v in vd.items() if k != "os_hash_algo"}
    task = await api.locations.add(
        rec.id, url, validation=validation, opener=opener, metadata=metadata,
        more=tuple((u, m) for u, m, _ in wanted[1:]), owner=caller.project_id or rec.owner,
        user_id=caller.user_id, request_id=request.request_id, wait=True)
    if task.status != "success":
        raise HTTPError(400, f"Invalid location: {task.message}")
    return api.engine.get_image(rec.id)


async def _remove(api: ApiContext, caller: Caller, rec: Any, part: str) -> Any:
    if not caller.is_admin:                        # delete_image_location: admin only
        policy.enforce(caller, rec, False, "delete_image_location")
    if rec.status != "active":
        raise Conflict(f"It's not allowed to remove locations if image status is "
                       f"{rec.status}.")

    def drop(cur: tuple) -> tuple:
        if len(cur) == 1:
            raise Forbidden("Cannot remove last location in the image.")
        i = _position(part, len(cur), False)
        return (*cur[:i], *cur[i + 1:])

    return await api.locations.edit(rec.id, drop)
