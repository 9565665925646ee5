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
from typing import Any
import os
from urllib.parse import urljoin

from tessera.http import policy
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError, negotiate
from tessera.http.message import Request, Response
from tessera.http.render import json_response

# Glance's versions.py order without image_cache_dir and without enabled_backends.
VERSIONS: tuple[tuple[str, str], ...] = (
    ("2.15", "SUPPORTED"), ("2.9", "SUPPORTED"), ("2.17", "CURRENT"),
    ("2.7", "SUPPORTED"), ("2.6", "SUPPORTED"), ("2.5", "SUPPORTED"), ("2.4", "SUPPORTED"),
    ("2.3", "SUPPORTED"), ("2.2", "SUPPORTED"), ("2.1", "SUPPORTED"), ("2.0", "SUPPORTED"),
)
ALLOWED_PREFIXES = frozenset({"v2"} | {f"v{v}" for v, _ in VERSIONS})
VND_MIME = "application/vnd.openstack.images-"

def import_methods(api: Any) -> tuple[str, ...]:
    """The import methods that work end to end on this node (tessera.http.imports)."""
    from tessera.http.imports import enabled_methods
    return enabled_methods(api.imports, api.store_ids)


def versions_body(base_url: str) -> bytes:
    url = base_url.rstrip("/") + "/"
    href = urljoin(url, "v2").rstrip("/") + "/"
    doc = {"versions": [{"id": f"v{v}", "status": status,
                         "links": [{"rel": "self", "href": href}]}
                        for v, status in VERSIONS]}
    return json.dumps(doc).encode()


def versions_response(base_url: str, status: int) -> Response:
    return Response(status, [("Content-Type", "application/json")], versions_body(base_url))


def negotiate_version(request: Request, base_url: str) -> tuple[str | None, Response | None]:
    """(path for the v2 router, None) or (None, the versions response to send)."""
    path = request.path
    segments = path.split("/")
    if len(segments) > 1 and segments[1] == "peer":
        # the replication routes live on the private peer port only (never negotiated here)
        return None, Response(404, [("Content-Type", "text/plain")], b"404 Not Found\n")
    if len(segments) > 1 and segments[1] == "versions":
        return None, versions_response(base_url, 200)
    accept = request.headers.get("accept") or ""
    if accept.startswith(VND_MIME):
        if accept[len(VND_MIME):] in ALLOWED_PREFIXES:
            return "/v2" + path, None
        return None, versions_response(base_url, 300)
    if len(segments) > 1 and segments[1] in ALLOWED_PREFIXES:
        return "/v2" + path[len(segments[1]) + 1:], None
    return None, versions_response(base_url, 300)


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


async def info_stores(request: Request) -> Response:
    raise HTTPError(404, "Multi backend is not supported at this site.")


def info_stores_detail(caller: Caller) -> Response:
    if not policy.stores_info_detail(caller):
        raise policy.forbidden("stores_info_detail")
    raise HTTPError(404, "Multi backend is not supported at this site.")


async def info_usage(api, request: Request, caller: Caller) -> Response:
    # Glance reports usage only with Keystone unified limits: {} unless per-project limits
    # are configured (engine/quotas.py), then limit and usage of the caller's project.
    return json_response({"usage": api.engine.usage(caller.project_id)})
