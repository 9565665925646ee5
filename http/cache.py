# The cache management API (glance-api.md 1.9): GET /v2/cache, PUT/DELETE /v2/cache/{id},
# DELETE /v2/cache (x-image-cache-clear-target), POST /v2/cache/clean and /v2/cache/prune.
# Invariants: off unless the engine's image_cache is on (then Glance's 404 "Caching via API
# is not supported at this site."); every route is admin-only (Glance's default policies);
# PUT queues and wakes the prefetcher (202); the engine does the work
# (engine/imagecache.py, engine/processes.py).
from __future__ import annotations

from tessera.engine.errors import NotFound
from tessera.http import policy
from tessera.http.api_context import ApiContext
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError
from tessera.http.message import Request, Response
from tessera.http.render import json_response, no_content

NOT_SUPPORTED = "Caching via API is not supported at this site."


def _cache(api: ApiContext, caller: Caller, action: str):
    if not api.engine.cfg.image_cache:
        raise HTTPError(404, NOT_SUPPORTED)
    if not caller.is_admin:
        raise policy.forbidden(action)
    return api.engine.processes.cache


async def list_cache(api: ApiContext, request: Request, caller: Caller) -> Response:
    return json_response(_cache(api, caller, "cache_list").listing())


async def queue_image(api: ApiContext, request: Request, caller: Caller) -> Response:
    cache = _cache(api, caller, "cache_image")
    try:
        await cache.queue(request.path_params["image_id"])
    except NotFound:
        raise NotFound(f"No image found with ID {request.path_params['image_id']}") from None
    return Response(202, [("Content-Type", "text/html; charset=UTF-8"),
                          ("Content-Length", "0")], b"")


async def delete_image(api: ApiContext, request: Request, caller: Caller) -> Response:
    await _cache(api, caller, "cache_delete").delete(request.path_params["image_id"])
    return no_content()


async def clear(api: ApiContext, request: Request, caller: Caller) -> Response:
    cache = _cache(api, caller, "cache_delete")
    target = request.headers.get("x-image-cache-clear-target") or "both"
    if target not in ("both", "cache", "queue") or target == "both" and \
            request.headers.get("x-image-cache-clear-target") == "both":
        raise HTTPError(400, "If provided 'x-image-cache-clear-target' must be 'cache', "
                             "'queue' or empty string.")
    await cache.clear(target)
    return no_content()


async def clean(api: ApiContext, request: Request, caller: Caller) -> Response:
    _cache(api, caller, "cache_clean")
    out = await api.engine.processes.run("cache_cleaner")
    return json_response({"total_files_cleaned": out["cache_entries_removed"]
                          + out["staging_files_removed"]})


async def prune(api: ApiContext, request: Request, caller: Caller) -> Response:
    _cache(api, caller, "cache_prune")
    result = await api.engine.processes.run("cache_pruner")
    return json_response({"total_files_pruned": result.images,
                          "total_bytes_pruned": result.bytes})
