# The tasks API (glance-api.md 1.10) and GET /v2/images/{id}/tasks: task records as Glance
# renders them.
# Invariants: /v2/tasks is admin-only (Glance's tasks_api_access default); list items omit
# input, result and message; /v2/images/{id}/tasks shows the image's tasks to whoever may see
# the image, as Glance's raw task rows (microsecond timestamps, deleted/deleted_at).
# DELETE /v2/tasks/{id} is not routed (the router answers 405 with Allow: GET). POST /v2/tasks
# (legacy `import` tasks) runs the web-download flow into a new image.
from __future__ import annotations

import time
from typing import Any

from tessera.engine.errors import NotFound, Unavailable
from tessera.engine.tasks import TASK_STATUSES, TASK_TYPES, TaskRecord
from tessera.http import policy, webdownload
from tessera.http.access import find_image
from tessera.http.api_context import ApiContext
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError
from tessera.http.jsonbody import read_json
from tessera.http.message import Request, Response
from tessera.http.render import isotime, json_response


def _micro(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}"


def task_view(t: TaskRecord, *, full: bool = True) -> dict[str, Any]:
    """Glance's task view. Its task rows always have an owner; a task created by a caller
    without a project or user (noauth) leaves those identifiers out rather than null, which
    /v2/schemas/task (type string) and so python-glanceclient would refuse."""
    view: dict[str, Any] = {"id": t.id, "type": t.type, "status": t.status}
    if t.owner is not None:
        view["owner"] = t.owner
    if full:
        view.update({"input": t.input, "result": t.result, "message": t.message})
    for key, value in (("image_id", t.image_id), ("request_id", t.request_id),
                       ("user_id", t.user_id)):
        if value is not None:
            view[key] = value
    if t.expires_at is not None:
        view["expires_at"] = isotime(t.expires_at)
    view.update({"created_at": isotime(t.created_at), "updated_at": isotime(t.updated_at),
                 "self": f"/v2/tasks/{t.id}", "schema": "/v2/schemas/task"})
    return view


def task_row(t: TaskRecord) -> dict[str, Any]:
    """A task as /v2/images/{id}/tasks shows it (Glance returns its database rows)."""
    return {"id": t.id, "type": t.type, "status": t.status, "owner": t.owner,
            "expires_at": _micro(t.expires_at), "created_at": _micro(t.created_at),
            "updated_at": _micro(t.updated_at), "deleted_at": None, "deleted": False,
            "image_id": t.image_id, "request_id": t.request_id, "user_id": t.user_id,
            "input": t.input, "result": t.result, "message": t.message}


def _admin(caller: Caller, action: str) -> None:
    if not caller.is_admin:
        raise policy.forbidden(action)


async def image_tasks(api: ApiContext, request: Request, caller: Caller) -> Response:
    try:
        rec = find_image(api.engine, caller, request.path_params["image_id"])
    except NotFound:
        raise NotFound("") from None          # Glance: a bare HTTPNotFound
    policy.enforce(caller, rec, policy.get_image(caller, rec), "get_image")
    return json_response({"tasks": [task_row(t) for t in api.engine.list_tasks(rec.id)]})


async def list_tasks(api: ApiContext, request: Request, caller: Caller) -> Response:
    _admin(caller, "get_tasks")
    q = dict(request.query)
    found = api.engine.list_tasks()
    if "type" in q:
        if q["type"] not in TASK_TYPES:
            raise HTTPError(400, f"Invalid type value: {q['type']}")
        found = [t for t in found if t.type == q["type"]]
    if "status" in q:
        if q["status"] not in TASK_STATUSES:
            raise HTTPError(400, f"Invalid status value: {q['status']}")
        found = [t for t in found if t.status == q["status"]]
    key = q.get("sort_key", "created_at")
    if key not in ("id", "type", "status", "created_at", "updated_at", "expires_at"):
        raise HTTPError(400, f"Invalid sort_key value: {key}")
    direction = q.get("sort_dir", "desc")
    if direction not in ("asc", "desc"):
        raise HTTPError(400, f"Invalid sort direction: {direction}")
    found.sort(key=lambda t: (getattr(t, key) or 0, t.id), reverse=direction == "desc")
    if "marker" in q:
        ids = [t.id for t in found]
        if q["marker"] not in ids:
            raise HTTPError(400, f"Invalid marker. Task {q['marker']} could not be found.")
        found = found[ids.index(q["marker"]) + 1:]
    limit = q.get("limit", "25")
    if not limit.isdigit():
        raise HTTPError(400, "limit param must be an integer")
    page = found[:int(limit)]
    body: dict[str, Any] = {"tasks": [task_view(t, full=False) for t in page],
                            "first": "/v2/tasks", "schema": "/v2/schemas/tasks"}
    if len(found) > len(page) and page:
        body["next"] = f"/v2/tasks?marker={page[-1].id}"
    return json_response(body)


async def show_task(api: ApiContext, request: Request, caller: Caller) -> Response:
    _admin(caller, "get_task")
    task_id = request.path_params["task_id"]
    try:
        task = api.engine.get_task(task_id)
    except NotFound:
        raise NotFound(f"Task with the given id {task_id} not found") from None
    return json_response(task_view(task))


def _schema_error(detail: str) -> HTTPError:
    return HTTPError(400, f"Provided object does not match schema 'task': {detail}")


async def create_task(api: ApiContext, request: Request, caller: Caller) -> Response:
    """POST /v2/tasks (legacy, admin-only): type `import` creates an image from
    input.image_properties and fetches input.import_from as web-download does (the same URI
    filter, pinned address and caps); 201 with the task, status pending."""
    _admin(caller, "add_task")
    body = await read_json(request, api.cfg.max_json_body)
    if not isinstance(body, dict):
        raise _schema_error(f"{body!r} is not of type 'object'")
    for name in ("type", "input"):
        if name not in body:
            raise _schema_error(f"'{name}' is a required property")
    if body["type"] not in TASK_TYPES:
        raise _schema_error(f"{body['type']!r} is not one of {list(TASK_TYPES)}")
    if body["type"] != "import":
        raise HTTPError(400, f"Tasks of type {body['type']} are created by the import API")
    task_input = body["input"]
    if not isinstance(task_input, dict):
        raise _schema_error(f"{task_input!r} is not of type 'object'")
    for name in ("import_from", "import_from_format", "image_properties"):
        if name not in task_input:
            raise HTTPError(400, f"Input does not contain '{name}' field")
    props = task_input["image_properties"]
    if not isinstance(props, dict):
        raise HTTPError(400, "image_properties must be an object")
    uri = task_input["import_from"]
    target = webdownload.check_uri(uri, api.imports)
    if target is None:
        raise HTTPError(400, f"URI for web-download does not pass filtering: {uri}")
    try:
        address = await webdownload.pin(target, api.imports)
    except Unavailable:
        address = None                     # unresolvable: the task fails, as Glance's does
    else:
        if address is None:
            raise HTTPError(400, f"URI for web-download does not pass filtering: {uri}")
    fields = {"container_format": "bare", **props,
              "disk_format": task_input["import_from_format"]}
    rec = await api.engine.create_image(fields, owner=caller.project_id)
    opener = webdownload.opener(target, address, api.imports, api.engine.cfg.image_size_cap)
    task = await api.engine.import_image(
        rec.id, method="web-download", import_req={"method": {"name": "web-download",
                                                              "uri": uri}},
        stores=(api.store_ids[0],), owner=caller.project_id, user_id=caller.user_id,
        request_id=request.request_id, opener=opener, task_type="import",
        task_input=task_input)
    return json_response(task_view(task), 201,
                         [("Location", f"{request.host_url}/v2/tasks/{task.id}")])
