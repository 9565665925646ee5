# Image members and tags (glance-api.md 1.2, 1.7): who an image is shared with and the
# image's tag set.
# Invariants: Glance's order of checks is kept (image lookup -> "only shared images have
# members" -> policy -> member lookup -> engine), because each step has its own status and
# message; an image or a membership the caller may not see is 404; only the member project
# (or an admin) changes a membership's status; a non-owner member sees only its own row.
from __future__ import annotations

from tessera.engine.errors import Conflict, Forbidden, NotFound, TooLarge
from tessera.engine.records import ImageRecord, MemberRecord
from tessera.http import policy
from tessera.http.access import find_image
from tessera.http.api_context import ApiContext
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError
from tessera.http.jsonbody import read_json
from tessera.http.message import Request, Response
from tessera.http.render import bare_no_content, json_response, member_view, no_content

MEMBER_STATUSES = ("pending", "accepted", "rejected")


def _image(api: ApiContext, caller: Caller, request: Request) -> ImageRecord:
    image_id = request.path_params["image_id"]
    return find_image(api.engine, caller, image_id, f"Image {image_id} not found.")


def _member_policy(caller: Caller, rec: ImageRecord, allowed: bool, action: str) -> None:
    """Glance's MemberAPIPolicy: get_image first (404 with WebOb's default text), then the
    rule itself (403)."""
    if not policy.get_image(caller, rec):
        raise NotFound("")
    if not allowed:
        raise policy.forbidden(action)


def _lookup_member(api: ApiContext, caller: Caller, rec: ImageRecord,
                   member_id: str) -> MemberRecord:
    _member_policy(caller, rec, policy.get_members(caller, rec), "get_member")
    missing = NotFound(f"{member_id} not found in the member list of the image {rec.id}.")
    own_row_only = not caller.is_admin and caller.project_id != rec.owner
    if own_row_only and member_id != caller.project_id:
        raise missing
    try:
        return api.engine.get_member(rec.id, member_id)
    except NotFound:
        raise missing from None


async def add_member(api: ApiContext, request: Request, caller: Caller) -> Response:
    body = await read_json(request, api.cfg.max_json_body)
    if not isinstance(body, dict):
        raise HTTPError(400, 'Expected a member in the form: {"member": "image_id"}')
    if "member" not in body:
        raise HTTPError(400, "Member to be added not specified")
    member_id = body["member"]
    if not member_id:
        raise HTTPError(400, "Member can't be empty")
    if isinstance(member_id, int) and not isinstance(member_id, bool):
        member_id = str(member_id)            # Glance stores a numeric member as its text
    if not isinstance(member_id, str) or len(member_id) > 255:
        raise HTTPError(400, "Provided object does not match schema 'member': "
                             f"{member_id!r} is not a valid member id")
    rec = _image(api, caller, request)
    not_allowed = HTTPError(403, f"Not allowed to create members for image {rec.id}.")
    if rec.visibility != "shared":
        raise not_allowed
    _member_policy(caller, rec, policy.owner_action(caller, rec), "add_member")
    try:
        member = await api.engine.add_member(rec.id, member_id)
    except Forbidden:
        raise not_allowed from None
    except Conflict:
        raise Conflict(f"Member {member_id} is duplicated for image {rec.id}") from None
    except TooLarge as exc:
        raise TooLarge(f"Image member limit exceeded for image {rec.id}: {exc.message}:") \
            from None
    return json_response(member_view(member))


async def list_members(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = _image(api, caller, request)
    if rec.visibility != "shared":
        raise HTTPError(403, f"Not allowed to list members for image {rec.id}: "
                             "Only shared images have members.")
    _member_policy(caller, rec, policy.get_members(caller, rec), "get_members")
    members = api.engine.list_members(rec.id)
    if not caller.is_admin and caller.project_id != rec.owner:
        members = [m for m in members if m.member_id == caller.project_id]
    return json_response({"members": [member_view(m) for m in members],
                          "schema": "/v2/schemas/members"})


async def show_member(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = _image(api, caller, request)
    if rec.visibility != "shared":
        raise NotFound("Only shared images have members.")
    try:
        member = _lookup_member(api, caller, rec, request.path_params["member_id"])
    except HTTPError as exc:                  # Glance shows a forbidden lookup as 404
        raise NotFound(exc.message) from None
    return json_response(member_view(member))


async def update_member(api: ApiContext, request: Request, caller: Caller) -> Response:
    body = await read_json(request, api.cfg.max_json_body)
    if not isinstance(body, dict):
        raise HTTPError(400, 'Expected a status in the form: {"status": "status"}')
    if "status" not in body:
        raise HTTPError(400, "Status not specified")
    status = body["status"]
    rec = _image(api, caller, request)
    if rec.visibility != "shared":
        raise HTTPError(403, f"Not allowed to update members for image {rec.id}.")
    member_id = request.path_params["member_id"]
    _lookup_member(api, caller, rec, member_id)
    _member_policy(caller, rec, policy.modify_member(caller, rec), "modify_member")
    if status not in MEMBER_STATUSES:
        raise HTTPError(400, 'Incorrect request: Status must be "pending", "accepted" or '
                             '"rejected".')
    member = await api.engine.update_member(rec.id, member_id, status)
    return json_response(member_view(member))


async def delete_member(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = _image(api, caller, request)
    if rec.visibility != "shared":
        raise HTTPError(403, f"Not allowed to delete members for image {rec.id}.")
    member_id = request.path_params["member_id"]
    _lookup_member(api, caller, rec, member_id)
    _member_policy(caller, rec, policy.owner_action(caller, rec), "delete_member")
    try:
        await api.engine.delete_member(rec.id, member_id)
    except NotFound:
        raise NotFound(f"{member_id} not found in the member list of the image {rec.id}.") \
            from None
    return bare_no_content()


# -- tags -------------------------------------------------------------------------------

async def add_tag(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = _image(api, caller, request)
    policy.enforce(caller, rec, policy.owner_action(caller, rec), "modify_image")
    tag = request.path_params["tag"]
    try:
        await api.engine.add_tag(rec.id, tag)
    except TooLarge as exc:
        raise TooLarge(f"Image tag limit exceeded for image {rec.id}: {exc.message}:") \
            from None
    return no_content()


async def delete_tag(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = _image(api, caller, request)
    policy.enforce(caller, rec, policy.owner_action(caller, rec), "modify_image")
    tag = request.path_params["tag"]
    if tag not in rec.tags:
        raise NotFound("")                    # Glance: a bare HTTPNotFound
    try:
        await api.engine.remove_tag(rec.id, tag)
    except NotFound:
        raise NotFound("") from None
    return no_content()
