# Image data over HTTP: PUT /file (upload), GET /file (download, single ranges), PUT /stage
# (glance-api.md 1.5).
# Invariants: bytes are streamed both ways -- the request body goes to the engine piece by
# piece, the download is the engine's iterator of memoryviews with an exact Content-Length;
# nothing here holds an image in memory. Ranges follow WebOb's parser and Glance's
# serializer: one range only (a list is 400), a start past the end is 416, an end past the
# end or a suffix longer than the image is clamped.
from __future__ import annotations

import re

from tessera.http import policy
from tessera.http.access import find_image
from tessera.http.api_context import ApiContext
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError
from tessera.http.images import UNFILLED_CONTENT_TYPE, media_type
from tessera.http.message import Request, Response
from tessera.http.render import bare_no_content, no_content
from tessera.http.stores import header_store

OCTET_STREAM = "application/octet-stream"
DEACTIVATED = "The requested image has been deactivated. Image data download is forbidden."
MULTI_RANGE = ("Requests with multiple ranges are not supported in Glance. You may make "
               "multiple single-range requests instead.")
_RANGE = re.compile(r"bytes *= *(\d*) *- *(\d*)", re.I)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(?:(\d+)|[*])")


def _require_octet_stream(request: Request) -> None:
    ctype = media_type(request)
    if ctype != OCTET_STREAM:
        raise HTTPError(415, f"Invalid content type {ctype}",
                        content_type=request.headers.get("content-type") or UNFILLED_CONTENT_TYPE)


def _expected_size(request: Request) -> int | None:
    declared = request.headers.get("x-openstack-image-size")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            size = -1
        if size < 0:
            raise HTTPError(400, f"Invalid value for x-openstack-image-size: {declared}")
        return size
    return request.body.length


async def upload(api: ApiContext, request: Request, caller: Caller) -> Response:
    _require_octet_stream(request)
    rec = find_image(api.engine, caller, request.path_params["image_id"])
    policy.enforce(caller, rec, policy.owner_action(caller, rec), "upload_image")
    store = header_store(api, request)
    if store is None:
        await api.engine.upload(rec.id, request.body, expected_size=_expected_size(request))
    else:
        await api.engine.upload(rec.id, request.body, expected_size=_expected_size(request),
                                store=store)
    return no_content()


async def stage(api: ApiContext, request: Request, caller: Caller) -> Response:
    _require_octet_stream(request)
    rec = find_image(api.engine, caller, request.path_params["image_id"])
    policy.enforce(caller, rec, policy.owner_action(caller, rec), "upload_image")
    await api.engine.stage(rec.id, request.body, expected_size=_expected_size(request))
    return no_content()


def parse_range(request: Request, size: int) -> tuple[int, int] | None:
    """[start, end) to send, or None for the whole image; HTTPError 400/416 when invalid."""
    header = request.headers.get("range")
    if header is not None:
        if "," in header:
            raise HTTPError(400, MULTI_RANGE)
        m = _RANGE.match(header)
        if m is None or (not m.group(1) and not m.group(2)):
            raise HTTPError(416, detail="Invalid Range header.")
        first, last = m.group(1), m.group(2)
        if not first:                          # suffix: the last N bytes
            return max(size - int(last), 0), size
        start = int(first)
        end = int(last) + 1 if last else None
        if end is not None and start >= end:
            raise HTTPError(416, detail="Invalid Range header.")
        if start >= size:
            raise HTTPError(416, detail="Invalid start position in Range header. Start "
                            f"position MUST be in the inclusive range [0, {size - 1}].")
        return start, min(end, size) if end is not None else size
    legacy = request.headers.get("content-range")
    if legacy is not None:
        m = _CONTENT_RANGE.match(legacy)
        if m is None or int(m.group(1)) > int(m.group(2)) or (
                m.group(3) is not None and int(m.group(2)) >= int(m.group(3))):
            raise HTTPError(416, detail="Invalid Content-Range header.")
        start, stop = int(m.group(1)), int(m.group(2)) + 1
        if m.group(3) is None and stop > size:
            raise HTTPError(416, detail="Invalid stop position in Content-Range header. The "
                            f"stop position MUST be in the inclusive range [0, {size - 1}].")
        if start >= size:
            raise HTTPError(416, detail="Invalid start position in Content-Range header. "
                            f"Start position MUST be in the inclusive range [0, {size - 1}].")
        return start, min(stop, size)
    return None


async def download(api: ApiContext, request: Request, caller: Caller) -> Response:
    rec = find_image(api.engine, caller, request.path_params["image_id"])
    policy.enforce(caller, rec, policy.download_image(caller, rec), "download_image")
    if rec.status == "deactivated" and not caller.is_admin:
        raise HTTPError(403, DEACTIVATED)
    if rec.size is None or rec.status not in ("active", "deactivated"):
        return bare_no_content()                # no data: Glance's HTTPNoContent
    span = parse_range(request, rec.size)
    start, end = span if span is not None else (0, rec.size)
    dl = api.engine.open_download(rec.id, start, end)
    try:
        await dl.prime()          # bytes that cannot be obtained now: an error status, not a cut
    except BaseException:
        await dl.aclose()
        raise
    if span is None and getattr(api.engine.cfg, "image_cache", False):
        api.engine.processes.cache.note_read(rec.id)        # a cache hit, if cached
    headers = [("Content-Type", OCTET_STREAM)]
    if span is not None:
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{rec.size}"))
    if dl.record.checksum:
        headers.append(("Content-MD5", dl.record.checksum))
    return Response(206 if span is not None else 200, headers, dl, content_length=end - start)
