# POST /v2/images/{id}/import (glance-api.md 1.6): the request body's rules, the import
# policies, web-download's URI filter, then one engine call that starts the task; 202 with an
# empty body as Glance sends it.
# Invariants: only enabled methods that work end to end are accepted (`enabled_methods`,
# what /v2/info/import and OpenStack-image-import-methods advertise); a URI that fails the
# filter is a 400 before any task exists; the fetch itself runs in the engine's background
# task through the opener built here (tessera.http.webdownload).
from __future__ import annotations

from typing import Any

from tessera.engine.errors import Conflict, Unavailable
from tessera.http import policy
from tessera.http.access import find_image
from tessera.http.api_context import ApiContext
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError
from tessera.http.jsonbody import read_json
from tessera.http.message import Request, Response
from tessera.http import webdownload

DEFAULT_STORE = "default"


def enabled_methods(cfg: webdownload.ImportConfig, stores: tuple[str, ...]) -> tuple[str, ...]:
    """The methods this site serves: copy-image only makes sense with more than one store."""
    return tuple(m for m in cfg.enabled_methods
                 if m in ("glance-direct", "web-download")
                 or (m == "copy-image" and len(stores) > 1))


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise HTTPError(400, f"'{name}' must be boolean value only")
    return value


def _stores(request: Request, body: dict, known: tuple[str, ...], current: tuple[str, ...],
            method: str, writable: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    all_stores = _bool(body, "all_stores", False)
    must_succeed = _bool(body, "all_stores_must_succeed", True)
    header = request.headers.get("x-image-meta-store")
    stores = body.get("stores")
    if stores is not None and (not isinstance(stores, list)
                               or not all(isinstance(s, str) for s in stores)):
        raise HTTPError(400, "'stores' must be a list of store identifiers")
    if all_stores and (stores or header):
        raise HTTPError(400, "All_stores parameter can't be used with x-image-meta-store "
                             "header or stores parameter")
    if not must_succeed and len(known) < 2:
        raise HTTPError(400, "all_stores_must_succeed=False needs multiple stores")
    if all_stores:                 # Glance's all_stores leaves read-only (http) stores out
        chosen = [s for s in writable if not (method == "copy-image" and s in current)]
        if not chosen:
            raise HTTPError(400, "Image is already present at all stores")
    elif stores:
        chosen = list(stores)
    elif header:
        chosen = [header]
    else:
        chosen = [known[0]] if method != "copy-image" else []
    for store in chosen:
        if store not in known:
            raise Conflict(f"Store for identifier {store} not found")
    if not chosen:
        raise HTTPError(400, "copy-image needs a target store (stores or all_stores)")
    return tuple(dict.fromkeys(chosen)), must_succeed


async def import_image(api: ApiContext, request: Request, caller: Caller) -> Response:
    body = await read_json(request, api.cfg.max_json_body)
    if not isinstance(body, dict):
        raise HTTPError(400, "Import request requires a 'method' field.")
    method = body.get("method")
    if not isinstance(method, dict) or "name" not in method:
        raise HTTPError(400, "Import request requires a 'name' field.")
    name = method["name"]
    known = api.store_ids
    if name not in enabled_methods(api.imports, known):
        raise HTTPError(400, f"Unknown import method name '{name}'.")
    rec = find_image(api.engine, caller, request.path_params["image_id"])
    if name == "copy-image":
        if not caller.is_admin:
            raise policy.forbidden("copy_image")
    else:
        policy.enforce(caller, rec, policy.owner_action(caller, rec), "import_image")
    current = tuple(known[0] if s == "default" else s for s in rec.stores)
    writable = tuple(getattr(api.engine.stores, "writable_ids", known))
    stores, must_succeed = _stores(request, body, known, current, name, writable)
    opener: Any = None
    if name == "web-download":
        uri = method.get("uri")
        target = webdownload.check_uri(uri, api.imports)
        if target is None:
            raise HTTPError(400, f"URI for web-download does not pass filtering: {uri}")
        address = await _pin(target, api.imports)
        if address == "":
            raise HTTPError(400, f"URI for web-download does not pass filtering: {uri}")
        opener = webdownload.opener(target, address, api.imports,
                                    api.engine.cfg.image_size_cap)
    import_req = {k: v for k, v in body.items()}
    await api.engine.import_image(rec.id, method=name, import_req=import_req, stores=stores,
                                  owner=caller.project_id or rec.owner,
                                  user_id=caller.user_id, request_id=request.request_id,
                                  opener=opener, must_succeed=must_succeed)
    return Response(202, [("Content-Type", "text/html; charset=UTF-8"),
                          ("Content-Length", "0")], b"")


async def _pin(target: webdownload.Target,
               cfg: webdownload.ImportConfig) -> tuple[str, ...] | str | None:
    """The pinned addresses; "" when the address is refused; None when the name does not
    resolve (the task then fails as an unreachable URL, as Glance's does)."""
    try:
        address = await webdownload.pin(target, cfg)
    except Unavailable:
        return None
    return "" if address is None else address
