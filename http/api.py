# The Images API v2 application: `build_app(engine, cfg)` returns `app(request) -> Response`
# for tessera.http.server. Order per request, as Glance's pipeline: /healthcheck (outside the
# versioned app) -> version negotiation (versions documents, /v2.N prefixes) -> authentication
# -> the route table -> the handler.
# Invariants: the route table below is the only place a path meets a handler; it declares
# methods in Glance's order (the router's 405 `Allow` lists them so); HEAD is routed nowhere
# (Glance answers 405); handlers are `handler(request, caller)` bound to one ApiContext.
from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from tessera.http import (cache, discovery, imagedata, images, imports, locations, schemas,
                          sharing, stores, tasks)
from tessera.http.metadefs import metadef_routes
from tessera.http.api_context import ApiContext
from tessera.http.auth import Authenticator, Caller
from tessera.http.config import ServerConfig
from tessera.http.errors import HTTPError
from tessera.http.message import Request, Response
from tessera.http.metrics import exposure
from tessera.http.render import ImageJsonCache
from tessera.http.routing import BODY_NOT_EXPECTED, Route, Router
from tessera.http.webdownload import ImportConfig
from tessera.http.workers import LOCAL_ROUTES, HandOff

App = Callable[[Request], Awaitable[Response]]


def _plain(handler: Callable[[Request], Awaitable[Response]]):
    """A handler that does not need the caller."""

    async def call(request: Request, caller: Caller) -> Response:
        return await handler(request)

    return call


def routes(api: ApiContext) -> list[Route]:
    def bind(fn: Any) -> Any:
        return partial(fn, api)

    return [
        Route("GET", "/v2/schemas/image", _plain(schemas.get_image_schema), body_reject=True),
        Route("GET", "/v2/schemas/images", _plain(schemas.get_images_schema), body_reject=True),
        Route("GET", "/v2/schemas/member", _plain(schemas.get_member_schema), body_reject=True),
        Route("GET", "/v2/schemas/members", _plain(schemas.get_members_schema),
              body_reject=True),
        Route("GET", "/v2/schemas/task", _plain(schemas.get_task_schema), body_reject=True),
        Route("GET", "/v2/schemas/tasks", _plain(schemas.get_tasks_schema), body_reject=True),
        Route("GET", "/v2/images", bind(images.index), body_reject=True),
        Route("POST", "/v2/images", bind(images.create)),
        Route("GET", "/v2/images/{image_id}", bind(images.show), body_reject=True),
        Route("GET", "/v2/images/{image_id}/tasks", bind(tasks.image_tasks),
              body_reject=True),
        Route("PATCH", "/v2/images/{image_id}", bind(images.update)),
        Route("DELETE", "/v2/images/{image_id}", bind(images.delete), body_reject=True),
        Route("POST", "/v2/images/{image_id}/actions/deactivate", bind(images.deactivate),
              body_reject=True),
        Route("POST", "/v2/images/{image_id}/actions/reactivate", bind(images.reactivate),
              body_reject=True),
        Route("GET", "/v2/images/{image_id}/file", bind(imagedata.download), body_reject=True),
        Route("PUT", "/v2/images/{image_id}/file", bind(imagedata.upload)),
        Route("PUT", "/v2/images/{image_id}/stage", bind(imagedata.stage)),
        Route("POST", "/v2/images/{image_id}/import", bind(imports.import_image)),
        Route("POST", "/v2/images/{image_id}/locations", bind(locations.add_location)),
        Route("GET", "/v2/images/{image_id}/locations", bind(locations.get_locations)),
        Route("GET", "/v2/tasks", bind(tasks.list_tasks), body_reject=True),
        Route("POST", "/v2/tasks", bind(tasks.create_task)),
        Route("GET", "/v2/tasks/{task_id}", bind(tasks.show_task), body_reject=True),
        Route("PUT", "/v2/images/{image_id}/tags/{tag}", bind(sharing.add_tag),
              body_reject=True),
        Route("DELETE", "/v2/images/{image_id}/tags/{tag}", bind(sharing.delete_tag),
              body_reject=True),
        Route("GET", "/v2/images/{image_id}/members", bind(sharing.list_members),
              body_reject=True),
        Route("POST", "/v2/images/{image_id}/members", bind(sharing.add_member)),
        Route("GET", "/v2/images/{image_id}/members/{member_id}", bind(sharing.show_member),
              body_reject=True),
        Route("PUT", "/v2/images/{image_id}/members/{member_id}", bind(sharing.update_member)),
        Route("DELETE", "/v2/images/{image_id}/members/{member_id}",
              bind(sharing.delete_member), body_reject=True),
        Route("GET", "/v2/info/import", bind(discovery.info_import), body_reject=True),
        Route("GET", "/v2/info/stores", bind(stores.info_stores), body_reject=True),
        Route("GET", "/v2/info/stores/detail", bind(stores.info_stores_detail),
              body_reject=True),
        Route("DELETE", "/v2/stores/{store_id}/{image_id}", bind(stores.delete_from_store),
              body_reject=True),
        Route("GET", "/v2/cache", bind(cache.list_cache), body_reject=True),
        Route("DELETE", "/v2/cache", bind(cache.clear), body_reject=True),
        Route("POST", "/v2/cache/clean", bind(cache.clean), body_reject=True),
        Route("POST", "/v2/cache/prune", bind(cache.prune), body_reject=True),
        Route("PUT", "/v2/cache/{image_id}", bind(cache.queue_image), body_reject=True),
        Route("DELETE", "/v2/cache/{image_id}", bind(cache.delete_image), body_reject=True),
        Route("GET", "/v2/info/usage", bind(discovery.info_usage)),
        *metadef_routes(api),
    ]


def _locations(engine: Any, imports: ImportConfig) -> Any:
    """The engine's image locations; with an http store, downloads of an image registered
    at a location read the chunks this node lacks from its origin (tessera.http.origin)."""
    if engine is None or not hasattr(engine, "catalog"):
        return None
    found = getattr(engine, "locations", None)
    if found is None:
        from tessera.engine.locations import Locations
        found = Locations(engine)
    data = getattr(engine, "data", None)
    if engine.stores.http_ids and hasattr(data, "add_chunk_source"):
        from tessera.http.origin import OriginSource
        data.add_chunk_source(OriginSource(imports, found))
    return found


def build_app(engine: Any, cfg: ServerConfig, metrics: Any = None, *,
              imports: ImportConfig | None = None, worker: bool = False) -> App:
    """`metrics`: a tessera.http.metrics.NodeMetrics to serve on GET /metrics (per
    cfg.metrics), or None. `worker`: the application of an API worker process
    (http/workers.py), over a read-only engine (engine/reads.py): a request routed elsewhere
    than LOCAL_ROUTES, or for /metrics, raises HandOff before anything is read."""
    stores = getattr(engine, "stores", None)
    default_store = stores.default_id if getattr(stores, "multi", False) else None
    imports = imports or ImportConfig()
    api = ApiContext(engine, cfg, imports=imports,
                     locations=None if worker else _locations(engine, imports),
                     image_json=ImageJsonCache(default_store=default_store,
                                               show_locations=cfg.show_multiple_locations,
                                               show_direct_url=cfg.show_image_direct_url))
    auth = Authenticator.from_config(cfg.auth, cfg.tokens_file)
    router = Router(routes(api), head_as_get=False)
    version_list = discovery.versions_for(
        multi_store=api.multi_store, cache=bool(getattr(engine.cfg, "image_cache", False))
        if engine is not None else False)
    metrics_mode = "off" if metrics is None else exposure(cfg.metrics, cfg.host, cfg.auth)

    async def app(request: Request) -> Response:
        if request.path == "/healthcheck":
            request.route = "/healthcheck"
            return discovery.healthcheck(request, cfg.healthcheck_disable_file)
        if worker and request.path == "/metrics":
            raise HandOff()
        if request.path == "/metrics" and metrics_mode != "off" and request.method == "GET":
            request.route = "/metrics"
            if metrics_mode == "admin" and not auth.authenticate(request).is_admin:
                raise HTTPError(403, "Metrics are for admins.")
            return await metrics.scrape()
        base_url = cfg.public_endpoint or request.host_url
        path, versions = discovery.negotiate_version(request, base_url, version_list)
        if versions is not None:
            request.route = "/versions"
            return versions
        caller = auth.authenticate(request)
        try:
            route, params = router.match(request.method, path)
        except HTTPError as exc:
            if exc.status == 405 and request.method == "HEAD":
                # Glance's 405 to a HEAD: WebOb's empty HTML entity, only Allow is useful.
                return Response(405, [("Content-Type", "text/html; charset=UTF-8"),
                                      *exc.headers], b"")
            raise
        if worker and (request.method != "GET" or route.pattern not in LOCAL_ROUTES):
            raise HandOff()
        request.path_params = params
        request.route = route.pattern
        if route.body_reject and request.body.present:
            raise HTTPError(400, BODY_NOT_EXPECTED)
        return await route.handler(request, caller)

    return app
