# The metadata definitions API (glance-api.md 1.12): namespaces, objects, properties, tags,
# resource types and their associations, and the metadefs schema documents; handlers and
# `metadef_routes(api)`.
# Invariants: each handler reads the body (Glance's JSON rules), refuses read-only attributes
# (403) and schema violations (400) first, then finds the namespace (invisible == missing),
# then applies Glance's default metadefs policy (reads: admin, or a reader of the owner
# project or of a public namespace; every write: admin; a failed rule on a namespace the
# caller cannot read is 404), then makes one engine call. Views follow Glance's (WSME) key
# order and omit unset fields; timestamps are render.isotime.
from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import urlencode

from tessera.engine import metadefs_rules as rules
from tessera.engine import metadefs_schemas
from tessera.engine.errors import Forbidden, NotFound
from tessera.engine.metadefs import Viewer, visible
from tessera.http import policy
from tessera.http.api_context import ApiContext
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError
from tessera.http.jsonbody import read_json
from tessera.http.listquery import parse_limit
from tessera.http.message import Request, Response
from tessera.http.render import isotime, json_response, no_content
from tessera.http.routing import Route

BASE = "/v2/metadefs/namespaces"
_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})


# -- policy --------------------------------------------------------------------------------
def viewer(caller: Caller) -> Viewer:
    return Viewer(is_admin=caller.is_admin, project_id=caller.project_id)


def can_read(caller: Caller, ns: dict[str, Any]) -> bool:
    """get_metadef_namespace (and every get/list of what a namespace holds)."""
    return caller.is_admin or (caller.has_role("reader") and (
        ns.get("visibility") == "public" or
        (caller.project_id is not None and caller.project_id == ns.get("owner"))))


def _require_admin(caller: Caller, action: str, ns: dict[str, Any] | None = None) -> None:
    """metadef_admin rules: 403, or 404 when the caller may not even read the namespace."""
    if caller.is_admin:
        return
    if ns is not None and not can_read(caller, ns):
        raise NotFound("")
    raise policy.forbidden(action)


def _require_read(caller: Caller, ns: dict[str, Any]) -> None:
    if not can_read(caller, ns):
        raise NotFound("")


def _find(api: ApiContext, caller: Caller, name: str) -> dict[str, Any]:
    """The namespace for a route below it: missing and invisible are the same 404."""
    try:
        return api.engine.metadefs.get_namespace(viewer(caller), name)
    except NotFound:
        raise NotFound(f"Namespace {name} not found") from None


# -- views ---------------------------------------------------------------------------------
def _set(view: dict[str, Any], rec: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = rec.get(key)
        if value is not None:
            view[key] = isotime(value) if key in ("created_at", "updated_at") else value


def association_view(a: dict[str, Any], *, stamps: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {}
    _set(view, a, ("name", "prefix", "properties_target") +
         (("created_at", "updated_at") if stamps else ()))
    return view


def object_view(o: dict[str, Any], ns_name: str, *, stamps: bool = True, echo: bool = False,
                prefix: str = "") -> dict[str, Any]:
    """An object as stored (`required` and `properties` always shown, empty when unset), or
    with `echo` as the create and update answers show it (only what the request set)."""
    view: dict[str, Any] = {"name": o["name"]}
    if o.get("required") is not None or not echo:
        view["required"] = [prefix + r for r in o.get("required") or ()]
    _set(view, o, ("description",))
    if o.get("properties") is not None or not echo:
        view["properties"] = {prefix + k: v for k, v in (o.get("properties") or {}).items()}
    if stamps:
        _set(view, o, ("created_at", "updated_at"))
        view["self"] = f"{BASE}/{ns_name}/objects/{o['name']}"
        view["schema"] = "/v2/schemas/metadefs/object"
    return view


def tag_view(t: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    _set(view, t, ("name", "created_at", "updated_at"))
    return view


def namespace_view(ns: dict[str, Any], *, contents: bool = True, stamps: bool = True,
                   prefix: str = "") -> dict[str, Any]:
    view: dict[str, Any] = {}
    _set(view, ns, ("namespace", "display_name", "description", "visibility", "protected",
                    "owner", "created_at", "updated_at"))
    if ns.get("resource_type_associations"):
        view["resource_type_associations"] = [association_view(a, stamps=stamps)
                                              for a in ns["resource_type_associations"]]
    if contents:
        if ns.get("properties"):
            view["properties"] = {prefix + k: v for k, v in ns["properties"].items()}
        if ns.get("objects"):
            view["objects"] = [object_view(o, ns["namespace"], stamps=stamps, echo=not stamps,
                                           prefix=prefix)
                               for o in ns["objects"]]
        if ns.get("tags"):
            view["tags"] = [{"name": t["name"]} for t in ns["tags"]]
    view["self"] = f"{BASE}/{ns['namespace']}"
    view["schema"] = "/v2/schemas/metadefs/namespace"
    return view


# -- request helpers -----------------------------------------------------------------------
async def _body(api: ApiContext, request: Request,
                read_only: tuple[str, ...] = rules.READ_ONLY) -> dict[str, Any]:
    body = await read_json(request, api.cfg.max_json_body)
    if not isinstance(body, dict):
        raise HTTPError(400, f"Provided object does not match schema: {body!r} is not of "
                             "type 'object'")
    key = rules.check_read_only(body, read_only)
    if key is not None:
        raise Forbidden(f"Attribute '{key}' is read-only.")
    return body


def _query(request: Request) -> dict[str, str]:
    return dict(request.query)        # Glance: one value per key, the last one


def _prefix_for(ns_detail: dict[str, Any], resource_type: str | None) -> str:
    for a in ns_detail.get("resource_type_associations") or ():
        if resource_type and a["name"] == resource_type:
            return a.get("prefix") or ""
    return ""


# -- namespaces ----------------------------------------------------------------------------
async def list_namespaces(api: ApiContext, request: Request, caller: Caller) -> Response:
    params = _query(request)
    limit = parse_limit(params.get("limit"))
    sort_dir = params.get("sort_dir", "desc")
    if sort_dir not in ("asc", "desc"):
        raise HTTPError(400, f"Invalid sort direction: {sort_dir}")
    visibility = params.get("visibility")
    if visibility and visibility not in ("public", "private"):
        raise HTTPError(400, f"Invalid visibility value: {visibility}")
    if not (caller.is_admin or caller.has_role("reader")):
        raise policy.forbidden("get_metadef_namespaces")
    rtypes = params.get("resource_types")
    rows = api.engine.metadefs.list_namespaces(
        viewer(caller), visibility=visibility or None,
        resource_types=rtypes.split(",") if rtypes else None,
        sort_key=params.get("sort_key", "created_at"), sort_dir=sort_dir,
        marker=params.get("marker"), limit=limit)
    rows = [ns for ns in rows if can_read(caller, ns)]
    body: dict[str, Any] = {"namespaces": [namespace_view(ns, contents=False) for ns in rows]}
    params.pop("marker", None)
    query = urlencode(params)
    if rows and len(rows) == limit:
        body["next"] = f"{BASE}?" + urlencode({**params, "marker": rows[-1]["namespace"]})
    body["schema"] = "/v2/schemas/metadefs/namespaces"
    body["first"] = BASE + (f"?{query}" if query else "")
    return json_response(body)


async def create_namespace(api: ApiContext, request: Request, caller: Caller) -> Response:
    body = await _body(api, request)
    rules.validate("namespace", body)
    _require_admin(caller, "add_metadef_namespace")
    detail = await api.engine.metadefs.create_namespace(body, owner=caller.project_id)
    headers = [("Location", f"{request.host_url}{BASE}/{detail['namespace']}")]
    return json_response(namespace_view(detail, stamps=False), 201, headers)


async def show_namespace(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    detail = api.engine.metadefs.namespace_detail(Viewer(True, caller.project_id), name)
    if not visible(viewer(caller), detail):
        raise NotFound("")          # Glance: a bare 404 for a namespace it hides
    _require_read(caller, detail)
    prefix = _prefix_for(detail, _query(request).get("resource_type"))
    return json_response(namespace_view(detail, prefix=prefix))


async def update_namespace(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    body = await _body(api, request)
    rules.validate("namespace", body)
    ns = _find(api, caller, name)
    _require_admin(caller, "modify_metadef_namespace", ns)
    new = await api.engine.metadefs.update_namespace(viewer(caller), name, body,
                                                    owner=caller.project_id)
    return json_response(namespace_view(new))


async def delete_namespace(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    ns = _find(api, caller, name)
    _require_admin(caller, "delete_metadef_namespace", ns)
    await api.engine.metadefs.delete_namespace(viewer(caller), name)
    return no_content()


def _delete_all(kind: str, action: str):
    async def handler(api: ApiContext, request: Request, caller: Caller) -> Response:
        name = request.path_params["namespace"]
        ns = _find(api, caller, name)
        _require_admin(caller, "delete_metadef_namespace", ns)
        if action:
            _require_admin(caller, action, ns)
        await api.engine.metadefs.delete_contents(viewer(caller), name, kind)
        return no_content()

    return handler


# -- objects -------------------------------------------------------------------------------
async def list_objects(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    _require_read(caller, _find(api, caller, name))
    objects = api.engine.metadefs.list_objects(viewer(caller), name)
    return json_response({"objects": [object_view(o, name) for o in objects],
                          "schema": "v2/schemas/metadefs/objects"})


async def create_object(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    body = await _body(api, request)
    rules.validate("object", body)
    _require_admin(caller, "add_metadef_object", _find(api, caller, name))
    obj = await api.engine.metadefs.create_object(viewer(caller), name, body)
    return json_response(object_view(obj, name, echo=True), 201)


async def show_object(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, obj_name = request.path_params["namespace"], request.path_params["object_name"]
    _require_read(caller, _find(api, caller, name))
    return json_response(object_view(api.engine.metadefs.get_object(viewer(caller), name,
                                                                     obj_name), name))


async def update_object(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, obj_name = request.path_params["namespace"], request.path_params["object_name"]
    body = await _body(api, request)
    rules.validate("object", body)
    _require_admin(caller, "modify_metadef_object", _find(api, caller, name))
    obj = await api.engine.metadefs.update_object(viewer(caller), name, obj_name, body)
    return json_response(object_view(obj, name, echo=True))


async def delete_object(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, obj_name = request.path_params["namespace"], request.path_params["object_name"]
    _require_admin(caller, "delete_metadef_object", _find(api, caller, name))
    await api.engine.metadefs.delete_object(viewer(caller), name, obj_name)
    return no_content()


# -- properties ----------------------------------------------------------------------------
async def list_properties(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    _require_read(caller, _find(api, caller, name))
    return json_response({"properties": api.engine.metadefs.list_properties(viewer(caller),
                                                                            name)})


async def create_property(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    body = await _body(api, request)
    rules.validate("property", body)
    _require_admin(caller, "add_metadef_property", _find(api, caller, name))
    prop = await api.engine.metadefs.create_property(viewer(caller), name, body)
    return json_response(prop, 201)


async def show_property(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, prop_name = request.path_params["namespace"], request.path_params["property_name"]
    md = api.engine.metadefs
    _require_read(caller, _find(api, caller, name))
    resource_type = _query(request).get("resource_type")
    prefix = ""
    if resource_type:
        prefix = _prefix_for({"resource_type_associations": md.list_associations(
            viewer(caller), name)}, resource_type)
        if prefix:
            if not prop_name.startswith(prefix):
                raise NotFound(f"Property {prop_name} does not start with the expected "
                               f"resource type association prefix of '{prefix}'.")
            prop_name = prop_name[len(prefix):]
    prop = md.get_property(viewer(caller), name, prop_name)
    prop["name"] = prefix + prop["name"]
    return json_response(prop)


async def update_property(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, prop_name = request.path_params["namespace"], request.path_params["property_name"]
    body = await _body(api, request)
    rules.validate("property", body)
    _require_admin(caller, "modify_metadef_property", _find(api, caller, name))
    prop = await api.engine.metadefs.update_property(viewer(caller), name, prop_name, body)
    return json_response(prop)


async def delete_property(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, prop_name = request.path_params["namespace"], request.path_params["property_name"]
    _require_admin(caller, "remove_metadef_property", _find(api, caller, name))
    await api.engine.metadefs.delete_property(viewer(caller), name, prop_name)
    return no_content()


# -- tags ----------------------------------------------------------------------------------
async def list_tags(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    _require_read(caller, _find(api, caller, name))
    tags = api.engine.metadefs.list_tags(viewer(caller), name)
    return json_response({"tags": [{"name": t["name"]} for t in tags]})


async def create_tags(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    body = await _body(api, request, ("created_at", "updated_at"))
    tags = body.get("tags")
    if set(body) - {"tags"} or not isinstance(tags, list) or not all(
            isinstance(t, dict) and set(t) == {"name"} for t in tags):
        raise HTTPError(400, "Provided object does not match schema 'tags': expected "
                             "{\"tags\": [{\"name\": ...}, ...]}")
    ns = _find(api, caller, name)
    _require_admin(caller, "add_metadef_tags", ns)
    append = (request.headers.get("x-openstack-append") or "").strip().lower() in _TRUE
    created = await api.engine.metadefs.create_tags(viewer(caller), name,
                                                    [t["name"] for t in tags], append=append)
    return json_response({"tags": [{"name": t["name"]} for t in created]}, 201)


async def create_tag(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, tag = request.path_params["namespace"], request.path_params["tag_name"]
    ns = _find(api, caller, name)
    rules.validate("tag", {"name": tag})
    _require_admin(caller, "add_metadef_tag", ns)
    return json_response(tag_view(await api.engine.metadefs.create_tag(viewer(caller), name,
                                                                       tag)), 201)


async def show_tag(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, tag = request.path_params["namespace"], request.path_params["tag_name"]
    _require_read(caller, _find(api, caller, name))
    return json_response(tag_view(api.engine.metadefs.get_tag(viewer(caller), name, tag)))


async def update_tag(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, tag = request.path_params["namespace"], request.path_params["tag_name"]
    body = await _body(api, request, ("created_at", "updated_at"))
    rules.validate("tag", body)
    _require_admin(caller, "modify_metadef_tag", _find(api, caller, name))
    rec = await api.engine.metadefs.update_tag(viewer(caller), name, tag, body)
    return json_response(tag_view(rec))


async def delete_tag(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, tag = request.path_params["namespace"], request.path_params["tag_name"]
    _require_admin(caller, "delete_metadef_tag", _find(api, caller, name))
    await api.engine.metadefs.delete_tag(viewer(caller), name, tag)
    return no_content()


# -- resource types ------------------------------------------------------------------------
async def list_resource_types(api: ApiContext, request: Request, caller: Caller) -> Response:
    if not (caller.is_admin or caller.has_role("reader")):
        raise policy.forbidden("list_metadef_resource_types")
    types = api.engine.metadefs.list_resource_types()
    return json_response({"resource_types": [tag_view(t) for t in types]})


async def list_associations(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    _require_read(caller, _find(api, caller, name))
    assocs = api.engine.metadefs.list_associations(viewer(caller), name)
    return json_response({"resource_type_associations": [association_view(a)
                                                         for a in assocs]})


async def create_association(api: ApiContext, request: Request, caller: Caller) -> Response:
    name = request.path_params["namespace"]
    body = await _body(api, request)
    rules.validate("resource_type", body)
    _require_admin(caller, "add_metadef_resource_type_association",
                   _find(api, caller, name))
    rec = await api.engine.metadefs.create_association(viewer(caller), name, body)
    return json_response(association_view(rec), 201)


async def delete_association(api: ApiContext, request: Request, caller: Caller) -> Response:
    name, rtype = request.path_params["namespace"], request.path_params["resource_type"]
    _require_admin(caller, "remove_metadef_resource_type_association",
                   _find(api, caller, name))
    await api.engine.metadefs.delete_association(viewer(caller), name, rtype)
    return no_content()


# -- schemas -------------------------------------------------------------------------------
def _schema(name: str):
    async def handler(request: Request, caller: Caller) -> Response:
        return json_response(metadefs_schemas.document(name))

    return handler


def metadef_routes(api: ApiContext) -> list[Route]:
    """The metadefs part of the route table (methods in Glance's order per path)."""
    def b(fn: Any) -> Any:
        return partial(fn, api)

    ns = BASE + "/{namespace}"
    routes = [Route("GET", f"/v2/schemas/metadefs/{name}", _schema(name), body_reject=True)
              for name in metadefs_schemas.NAMES]
    routes += [
        Route("GET", BASE, b(list_namespaces), body_reject=True),
        Route("POST", BASE, b(create_namespace)),
        Route("GET", ns, b(show_namespace), body_reject=True),
        Route("PUT", ns, b(update_namespace)),
        Route("DELETE", ns, b(delete_namespace), body_reject=True),
        Route("GET", f"{ns}/objects", b(list_objects), body_reject=True),
        Route("POST", f"{ns}/objects", b(create_object)),
        Route("DELETE", f"{ns}/objects", b(_delete_all("object", "")), body_reject=True),
        Route("GET", f"{ns}/objects/{{object_name}}", b(show_object), body_reject=True),
        Route("PUT", f"{ns}/objects/{{object_name}}", b(update_object)),
        Route("DELETE", f"{ns}/objects/{{object_name}}", b(delete_object), body_reject=True),
        Route("GET", f"{ns}/properties", b(list_properties), body_reject=True),
        Route("POST", f"{ns}/properties", b(create_property)),
        Route("DELETE", f"{ns}/properties", b(_delete_all("property", "")),
              body_reject=True),
        Route("GET", f"{ns}/properties/{{property_name}}", b(show_property),
              body_reject=True),
        Route("PUT", f"{ns}/properties/{{property_name}}", b(update_property)),
        Route("DELETE", f"{ns}/properties/{{property_name}}", b(delete_property),
              body_reject=True),
        Route("GET", f"{ns}/tags", b(list_tags), body_reject=True),
        Route("POST", f"{ns}/tags", b(create_tags)),
        Route("DELETE", f"{ns}/tags", b(_delete_all("tag", "delete_metadef_tags")),
              body_reject=True),
        Route("GET", f"{ns}/tags/{{tag_name}}", b(show_tag), body_reject=True),
        Route("POST", f"{ns}/tags/{{tag_name}}", b(create_tag)),
        Route("PUT", f"{ns}/tags/{{tag_name}}", b(update_tag)),
        Route("DELETE", f"{ns}/tags/{{tag_name}}", b(delete_tag), body_reject=True),
        Route("GET", "/v2/metadefs/resource_types", b(list_resource_types), body_reject=True),
        Route("GET", f"{ns}/resource_types", b(list_associations), body_reject=True),
        Route("POST", f"{ns}/resource_types", b(create_association)),
        Route("DELETE", f"{ns}/resource_types/{{resource_type}}", b(delete_association),
              body_reject=True),
    ]
    return routes
