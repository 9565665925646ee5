# The image handlers of the Images API v2: create, show, list, update (PATCH), delete,
# deactivate and reactivate (glance-api.md 1.2-1.4).
# Invariants: each handler authenticates nothing itself (it receives the Caller), loads the
# image through access.find_image (invisible == missing), checks Glance's default policy,
# then makes one engine call; the engine applies the data rules and raises engine errors,
# which tessera.http.errors maps to statuses. HTTP-only conditions raise HTTPError.
from __future__ import annotations

import re
from typing import Any

from tessera.engine.errors import Conflict, Forbidden, NotFound
from tessera.engine.patch import PatchOp
from tessera.http import policy
from tessera.http.access import find_image
from tessera.http.api_context import ApiContext
from tessera.http.auth import Caller
from tessera.http.discovery import import_methods
from tessera.http.errors import HTTPError, status_for
from tessera.http.jsonbody import read_json
from tessera.http.listquery import page_links, parse_list_query
from tessera.http.locations import is_location_op, patch_locations
from tessera.http.message import Request, Response
from tessera.http.render import images_page, json_response, no_content

PATCH_MEDIA_TYPES = {
    "application/openstack-images-v2.0-json-patch": "2.0",
    "application/openstack-images-v2.1-json-patch": "2.1",
}
ACCEPT_PATCH = ", ".join(sorted(PATCH_MEDIA_TYPES))
# WebOb leaves its 415 template variable unfilled when the request has no Content-Type.
UNFILLED_CONTENT_TYPE = "${CONTENT_TYPE}"
_OPS = ("add", "remove", "replace")
# Glance raises these PATCH refusals with the text as WebOb's *detail* (under the status'
# default explanation), unlike most errors; the status still comes from the one table.
_DETAIL_MESSAGES = re.compile(r"Property .+ (does not exist|already present|may not be "
                              r"removed)\.|Owner can't be updated by non admin\.")


def media_type(request: Request) -> str | None:
    """The request's Content-Type without parameters, lower-cased (None when absent)."""
    value = request.headers.get("content-type")
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower()


async def create(api: ApiContext, request: Request, caller: Caller) -> Response:
    body = await read_json(request, api.cfg.max_json_body)
    if not isinstance(body, dict):
        raise HTTPError(400, "Provided object does not match schema 'image': "
                             f"{body!r} is not of type 'object'")
    owner = body.get("owner", caller.project_id)
    if not policy.add_image(caller, owner):
        raise policy.forbidden("add_image")
    visibility = body.get("visibility")
    if visibility == "public" and not policy.publicize_image(caller):
        raise policy.forbidden("publicize_image")
    if visibility == "community" and not policy.communitize_image(caller, owner):
        raise policy.forbidden("communitize_image")
    rec = await api.engine.create_image(body, owner=caller.project_id)
    headers = [("Location", f"{request.host_url}/v2/images/{rec.id}")]
    methods = import_methods(api)
    if methods:
        headers.append(("OpenStack-image-import-methods", ",".join(methods)))
    if api.multi_store:
        headers.append(("OpenStack-image-store-ids", ",".join(api.store_ids)))
    return json_response(api.image_json.view(rec), 201, headers)


async def show(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = find_image(api.engine, caller, request.path_params["image_id"])
    policy.enforce(caller, rec, policy.get_image(caller, rec), "get_image")
    return Response(200, [("Content-Type", "application/json")], api.image_json(rec))


async def index(api: ApiContext, request: Request, caller: Caller) -> Response:
    query = parse_list_query(request.query, caller)
    if not policy.get_images(caller):
        raise policy.forbidden("get_images")
    page = api.engine.list_images(query)
    records = [rec for rec in page.images if policy.get_image(caller, rec)]
    # Glance: `next` when the database page was full, pointing after the last shown image.
    next_marker = records[-1].id if records and page.next_marker is not None else None
    links = page_links(request.query, next_marker)
    return images_page([api.image_json(rec) for rec in records], links["first"],
                       links.get("next"))


def parse_patch(body: Any, dialect: str) -> list[PatchOp]:
    """Glance's PATCH deserializer: the body's shape and each operation's members."""
    if not isinstance(body, list):
        raise HTTPError(400, "Request body must be a JSON array of operation objects.")
    ops = []
    for raw in body:
        if not isinstance(raw, dict):
            raise HTTPError(400, "Operations must be JSON objects.")
        if dialect == "2.1":
            op = raw.get("op")
            if op is None:
                raise HTTPError(400, "Unable to find `op` in JSON Schema change. It must be "
                                     f"one of the following: {', '.join(_OPS)}.")
            if op not in _OPS:
                raise HTTPError(400, f"Invalid operation: `{op}`. It must be one of the "
                                     f"following: {', '.join(_OPS)}.")
            if "path" not in raw:
                raise HTTPError(400, "Unable to find 'path' in JSON Schema change")
            path = raw["path"]
        else:
            present = [name for name in _OPS if name in raw]
            if len(present) > 1:
                raise HTTPError(400, 'Operation objects must contain only one member named '
                                     '"add", "remove", or "replace".')
            if not present:
                raise HTTPError(400, 'Operation objects must contain exactly one member '
                                     'named "add", "remove", or "replace".')
            op = present[0]
            path = raw[op]
        if not isinstance(path, str):
            raise HTTPError(400, f'Pointer `{path}` does not start with "/".')
        if op == "remove":
            ops.append(PatchOp(op, path, dialect=dialect))
            continue
        if "value" not in raw:
            raise HTTPError(400, f'Operation "{op}" requires a member named "value".')
        ops.append(PatchOp(op, path, raw["value"], dialect=dialect))
    return ops


def _visibility_target(ops: list[PatchOp]) -> str | None:
    target = None
    for op in ops:
        if op.op != "remove" and op.path.strip() == "/visibility":
            target = op.value
    return target


async def update(api: ApiContext, request: Request, caller: Caller) -> Response:
    dialect = PATCH_MEDIA_TYPES.get(media_type(request) or "")
    if dialect is None:
        sent = request.headers.get("content-type") or UNFILLED_CONTENT_TYPE
        raise HTTPError(415, "Image PATCH expects Content-Type one of: " + ACCEPT_PATCH,
                        (("Accept-Patch", ACCEPT_PATCH),), content_type=sent)
    ops = parse_patch(await read_json(request, api.cfg.max_json_body), dialect)
    image_id = request.path_params["image_id"]
    rec = find_image(api.engine, caller, image_id,
                     f"Failed to find image {image_id} to update")
    policy.enforce(caller, rec, policy.owner_action(caller, rec), "modify_image")
    visibility = _visibility_target(ops)
    if visibility == "public" and not policy.publicize_image(caller):
        raise policy.forbidden("publicize_image")
    if visibility == "community" and not policy.communitize_image(caller, rec.owner):
        raise policy.forbidden("communitize_image")
    moved = [op for op in ops if is_location_op(op)] if api.cfg.show_multiple_locations else []
    if moved:           # the legacy location operations (show_multiple_locations)
        ops = [op for op in ops if not is_location_op(op)]
        if ops:
            rec = await api.engine.update_image(rec.id, ops, is_admin=caller.is_admin)
        return json_response(api.image_json.view(
            await patch_locations(api, request, caller, rec, moved)))
    try:
        new = await api.engine.update_image(rec.id, ops, is_admin=caller.is_admin)
    except (Conflict, Forbidden) as exc:
        if _DETAIL_MESSAGES.fullmatch(exc.message):
            raise HTTPError(status_for(exc), detail=exc.message) from None
        raise
    return json_response(api.image_json.view(new))


async def delete(api: ApiContext, request: Request, caller: Caller) -> Response:
    image_id = request.path_params["image_id"]
    rec = find_image(api.engine, caller, image_id, f"Failed to find image {image_id} to delete")
    policy.enforce(caller, rec, policy.owner_action(caller, rec), "delete_image")
    try:
        await api.engine.delete_image(rec.id)
    except NotFound:
        raise NotFound(f"Failed to find image {image_id} to delete") from None
    return no_content()


async def deactivate(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = find_image(api.engine, caller, request.path_params["image_id"])
    policy.enforce(caller, rec, policy.owner_action(caller, rec), "deactivate")
    await api.engine.deactivate(rec.id)
    return no_content()


async def reactivate(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = find_image(api.engine, caller, request.path_params["image_id"])
    policy.enforce(caller, rec, policy.owner_action(caller, rec), "reactivate")
    await api.engine.reactivate(rec.id)
    return no_content()
