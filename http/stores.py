# The multi-store routes (glance-api.md 1.2, 1.8): /v2/info/stores, /v2/info/stores/detail,
# DELETE /v2/stores/{store_id}/{image_id}, and the X-Image-Meta-Store header's check.
# Invariants: without [[stores]] every route answers Glance's 404 "Multi backend is not
# supported at this site."; `default` and `weight` render as Glance does (the string "true",
# an integer); only admins and the service role see the detail (store paths); an http store
# (image locations) is shown with Glance's "read-only": "true".
from __future__ import annotations

from tessera.http import policy
from tessera.http.access import find_image
from tessera.http.api_context import ApiContext
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError
from tessera.http.message import Request, Response
from tessera.http.render import bare_no_content, json_response

NOT_SUPPORTED = "Multi backend is not supported at this site."
READ_ONLY = "Error in store configuration. Adding images to store is disabled."


def _require_multi(api: ApiContext) -> None:
    if not api.multi_store:
        raise HTTPError(404, NOT_SUPPORTED)


def header_store(api: ApiContext, request: Request) -> str | None:
    """The X-Image-Meta-Store of an upload: None when absent; 400 for an unknown store."""
    store = request.headers.get("x-image-meta-store")
    if store is None:
        return None
    if not api.multi_store or store not in api.store_ids:
        raise HTTPError(400, f"Store for identifier {store} not found")
    if api.engine.stores.is_http(store):       # glance_store's StoreAddDisabled
        raise HTTPError(410, READ_ONLY)
    return store


def _entry(sc, *, detail: bool, path: str) -> dict:
    entry = {"id": sc.id, "description": sc.description}
    if sc.default:
        entry["default"] = "true"
    if sc.type == "http":                 # Glance marks its http store so; no properties
        entry["read-only"] = "true"
        if detail:
            entry.update({"type": "http", "properties": {}, "weight": sc.weight})
        return entry
    if sc.type == "s3":                   # glance_store's s3 driver's properties (MiB)
        if detail:
            from tessera.engine.objstore.client import S3Config as c
            entry.update({"type": "s3", "weight": sc.weight, "properties": {
                "s3_store_large_object_size": c.multipart_threshold // 2**20,
                "s3_store_large_object_chunk_size": c.part_size // 2**20,
                "s3_store_thread_pools": c.part_concurrency}})
        return entry
    if detail:
        entry.update({"type": "file", "weight": sc.weight,
                      "properties": {"data_dir": path, "chunk_size": 65536,
                                     "thin_provisioning": False}})
    return entry


async def info_stores(api: ApiContext, request: Request, caller: Caller) -> Response:
    _require_multi(api)
    stores = api.engine.stores
    out = []
    for i, d in enumerate(stores.details()):
        entry = _entry(d["config"], detail=False, path=d["path"])
        if i == 0:
            entry["default"] = "true"
        out.append(entry)
    return json_response({"stores": out})


async def info_stores_detail(api: ApiContext, request: Request, caller: Caller) -> Response:
    if not policy.stores_info_detail(caller):
        raise policy.forbidden("stores_info_detail")
    _require_multi(api)
    out = []
    for i, d in enumerate(api.engine.stores.details()):
        entry = _entry(d["config"], detail=True, path=d["path"])
        if i == 0:
            entry["default"] = "true"
        out.append(entry)
    return json_response({"stores": out})


async def delete_from_store(api: ApiContext, request: Request, caller: Caller) -> Response:
    _require_multi(api)
    store = request.path_params["store_id"]
    image_id = request.path_params["image_id"]
    if store not in api.store_ids:
        raise HTTPError(409, f"Unknown store {store}.")
    rec = find_image(api.engine, caller, image_id)
    if not caller.is_admin:                   # Glance: delete_image_location is admin only
        policy.enforce(caller, rec, False, "delete_image_location")
    await api.engine.delete_from_store(rec.id, store)
    return bare_no_content()
