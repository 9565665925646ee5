# Discovery: the versions documents, Glance's version negotiation of the path prefix, the
# health check and the /v2/info routes -- as Glance 33 answers them with no image cache
# directory and no multi-store (2.17 CURRENT).
# Invariants: version negotiation runs before authentication (clients discover versions
# without credentials, as in Glance's pipeline); an accepted prefix (/v2, /v2.N for the
# minor versions this configuration advertises, or the `application/vnd.openstack.images-`
# Accept media type) maps to the one v2 route table; anything else gets the versions
# document with 300. Nothing here advertises a feature that is not implemented.
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any
import os
from urllib.parse import urljoin

from tessera.http.auth import Caller
from tessera.http.errors import negotiate
from tessera.http.message import Request, Response
from tessera.http.render import json_response

# Glance's versions.py order without image_cache_dir and without enabled_backends.
VERSIONS: tuple[tuple[str, str], ...] = (
    ("2.15", "SUPPORTED"), ("2.9", "SUPPORTED"), ("2.17", "CURRENT"),
    ("2.7", "SUPPORTED"), ("2.6", "SUPPORTED"), ("2.5", "SUPPORTED"), ("2.4", "SUPPORTED"),
    ("2.3", "SUPPORTED"), ("2.2", "SUPPORTED"), ("2.1", "SUPPORTED"), ("2.0", "SUPPORTED"),
)
# With enabled backends (multi-store) Glance also lists 2.8 and 2.10-2.13 (stores, copy-image,
# delete from store, image tasks).
MULTI_STORE_VERSIONS: tuple[tuple[str, str], ...] = (
    ("2.15", "SUPPORTED"), ("2.13", "SUPPORTED"), ("2.12", "SUPPORTED"),
    ("2.11", "SUPPORTED"), ("2.10", "SUPPORTED"), ("2.9", "SUPPORTED"), ("2.8", "SUPPORTED"),
    *VERSIONS[2:],
)
CACHE_VERSIONS: tuple[tuple[str, str], ...] = (
    ("2.18", "CURRENT"), ("2.16", "SUPPORTED"), ("2.15", "SUPPORTED"), ("2.14", "SUPPORTED"))
ALLOWED_PREFIXES = frozenset({"v2"} | {f"v{v}" for v, _ in MULTI_STORE_VERSIONS}
                             | {f"v{v}" for v, _ in CACHE_VERSIONS})


def versions_for(*, multi_store: bool, cache: bool) -> tuple[tuple[str, str], ...]:
    """The versions document of this configuration: the cache API adds 2.14, 2.16 and 2.18
    (CURRENT), multi-store adds 2.8 and 2.10-2.13."""
    base = MULTI_STORE_VERSIONS if multi_store else VERSIONS
    if not cache:
        return base
    rest = tuple((v, "SUPPORTED" if v == "2.17" else s) for v, s in base if v != "2.15")
    return CACHE_VERSIONS + rest
VND_MIME = "application/vnd.openstack.images-"

def import_methods(api: Any) -> tuple[str, ...]:
    """The import methods that work end to end on this node (tessera.http.imports)."""
    from tessera.http.imports import enabled_methods
    return enabled_methods(api.imports, api.store_ids)


def versions_body(base_url: str, versions: tuple = VERSIONS) -> bytes:
    url = base_url.rstrip("/") + "/"
    href = urljoin(url, "v2").rstrip("/") + "/"
    doc = {"versions": [{"id": f"v{v}", "status": status,
                         "links": [{"rel": "self", "href": href}]}
                        for v, status in versions]}
    return json.dumps(doc).encode()


def versions_response(base_url: str, status: int, versions: tuple = VERSIONS) -> Response:
    return Response(status, [("Content-Type", "application/json")],
                    versions_body(base_url, versions))


@lru_cache(maxsize=16)
def _allowed(versions: tuple) -> frozenset[str]:
    """The path prefixes (and vnd media type suffixes) the versions admit."""
    return frozenset({"v2"} | {f"v{v}" for v, _ in versions})


def negotiate_version(request: Request, base_url: str, versions: tuple = VERSIONS
                      ) -> tuple[str | None, Response | None]:
    """(path for the v2 router, None) or (None, the versions response to send)."""
    allowed = _allowed(versions)
    path = request.path
    segments = path.split("/")
    if len(segments) > 1 and segments[1] == "peer":
        # the replication routes live on the private peer port only (never negotiated here)
        return None, Response(404, [("Content-Type", "text/plain")], b"404 Not Found\n")
    if len(segments) > 1 and segments[1] == "versions":
        return None, versions_response(base_url, 200, versions)
    accept = request.headers.get("accept") or ""
    if accept.startswith(VND_MIME):
        if accept[len(VND_MIME):] in allowed:
            return "/v2" + path, None
        return None, versions_response(base_url, 300, versions)
    if len(segments) > 1 and segments[1] in allowed:
        return "/v2" + path[len(segments[1]) + 1:], None
    return None, versions_response(base_url, 300, versions)


# -- /healthcheck (oslo.middleware's Healthcheck, outside the versioned app) ----------------

_HEALTH_HTML = ('<HTML>\n<HEAD><TITLE>Healthcheck Status</TITLE></HEAD>\n<BODY>\n\n'
                '<H2>Result of 1 checks:</H2>\n<TABLE bgcolor="#ffffff" border="1">\n<TBODY>\n'
                '<TR>\n\n<TH>\nReason\n</TH>\n</TR>\n<TR>\n\n    <TD>{reason}</TD>\n\n</TR>\n'
                '</TBODY>\n</TABLE>\n<HR></HR>\n\n</BODY>\n</HTML>')
DISABLED = "DISABLED BY FILE"


def healthcheck(request: Request, disable_file: str | None = None) -> Response:
    """oslo.middleware's Healthcheck with the disable_by_file backend: 200 "OK", or 503
    "DISABLED BY FILE" while `disable_file` exists (operators drain a node from a load
    balancer by touching it)."""
    disabled = disable_file is not None and os.path.exists(disable_file)
    status, reason = (503, DISABLED) if disabled else (200, "OK")
    if request.method == "HEAD":
        return Response(204 if status == 200 else status, [], b"")
    kind = _health_kind(request.headers.get("accept"))
    if kind == "application/json":
        body = json.dumps({"detailed": False, "reasons": [reason]}, indent=4)
        return Response(status, [("Content-Type", "application/json")], body.encode())
    if kind == "text/html":
        return Response(status, [("Content-Type", "text/html; charset=UTF-8")],
                        _HEALTH_HTML.format(reason=reason).encode())
    return Response(status, [("Content-Type", "text/plain; charset=UTF-8")], reason.encode())


def _health_kind(accept: str | None) -> str:
    # oslo offers text/plain first, so */* and absent Accept get plain text.
    if not accept or "text/plain" in accept or "*/*" in accept:
        return "text/plain"
    return negotiate(accept)


# -- /v2/info ---------------------------------------------------------------------------

async def info_import(api: Any, request: Request, caller: Caller) -> Response:
    return json_response({"import-methods": {"description": "Import methods available.",
                                             "type": "array",
                                             "value": list(import_methods(api))}})


async def info_usage(api, request: Request, caller: Caller) -> Response:
    # Glance reports usage only with Keystone unified limits: {} unless per-project limits
    # are configured (engine/quotas.py), then limit and usage of the caller's project.
    return json_response({"usage": api.engine.usage(caller.project_id)})
