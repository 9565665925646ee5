# The locations API (glance-api.md 1.2, 4, 5.8): POST /v2/images/{id}/locations (Glance's
# new add-location API: 202 and a background `location_import` task) and GET
# /v2/images/{id}/locations (service role or admin only).
# Invariants: Glance's order of checks (body schema 400, image 404, status 409, policy 403,
# http store 403, validation data 400, URI filter 400, import lock 409); a URL is accepted
# only if it passes web-download's filter ([import]: schemes, hosts, ports, address
# classes) and only an http store's scheme (http, https) is ever read; the origin is read in
# the engine's background runner through the pinned fetch built here.
from __future__ import annotations

from typing import Any

from tessera.engine.errors import Conflict, Forbidden, InvalidInput, Unavailable
from tessera.engine.locations import check_validation_data
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
