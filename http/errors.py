# The one table that maps tessera.engine.errors classes to HTTP statuses, the HTTP-only error
# (HTTPError), and the renderer of Glance's error bodies. Invariants: nothing else in the code
# maps an error to a status; bodies are byte for byte what Glance (WebOb 1.8 exception
# templates) sends, negotiated on Accept: text/plain by default, application/json (flat
# message/code/title with the `<br /><br />` artefact), text/html for text/html or */*.
from __future__ import annotations

import html
import json
import re

from tessera.engine import errors as E
from tessera.http.message import Response

# Most specific class first: the first isinstance match wins.
STATUS_BY_ERROR: tuple[tuple[type[E.TesseraError], int], ...] = (
    (E.NotFound, 404),
    (E.BadTransition, 400),
    (E.InvalidInput, 400),
    (E.Forbidden, 403),
    (E.InvalidTransition, 409),
    (E.Conflict, 409),
    (E.StorageFull, 413),
    (E.TooLarge, 413),
    (E.Gone, 410),
    (E.UnsupportedFormat, 415),
    (E.StoreAccessDenied, 503),
    (E.Unavailable, 503),
    (E.CorruptData, 500),
    (E.StoreMismatch, 500),
)

# Reason phrases (WebOb titles) and WebOb's default explanations (whitespace-normalised, as
# WebOb does at import time).
TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout",
    409: "Conflict", 410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Request Range Not Satisfiable",
    417: "Expectation Failed", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}
EXPLANATIONS = {
    400: "The server could not comply with the request since it is either malformed or "
         "otherwise incorrect.",
    401: "This server could not verify that you are authorized to access the document you "
         "requested. Either you supplied the wrong credentials (e.g., bad password), or your "
         "browser does not understand how to supply the credentials required.",
    403: "Access was denied to this resource.",
    404: "The resource could not be found.",
    408: "The server has waited too long for the request to be sent by the client.",
    409: "There was a conflict when trying to complete your request.",
    410: "This resource is no longer available. No forwarding address is given.",
    411: "Content-Length header required.",
    412: "Request precondition failed.",
    413: "The body of your request was too large for this server.",
    414: "The request URI was too long for this server.",
    416: "The Range requested is not available.",
    417: "Expectation failed.",
    429: "The client has sent too many requests in a given amount of time",
    431: "The request header fields were too large",
    500: "The server has either erred or is incapable of performing the requested operation.",
    502: "Bad gateway.",
    503: "The server is currently unavailable. Please try again at a later time.",
    504: "The gateway has timed out.",
    505: "The HTTP version is not supported.",
}


class HTTPError(Exception):
    """An HTTP-only condition (405 with Allow, 415 with Accept-Patch, 416, 400 body rules...).

    `message` is WebOb's explanation (empty: the status' default one); `detail` is WebOb's
    detail (rarely used by Glance, e.g. 416). For 405, `method` fills WebOb's template; for
    415, `content_type` is the request's media type named by WebOb's template (`message` then
    plays the part of the detail, as in Glance's transcript).
    """

    def __init__(self, status: int, message: str = "", headers: tuple[tuple[str, str], ...]
                 | list[tuple[str, str]] = (), *, detail: str = "", method: str = "",
                 content_type: str = "") -> None:
        super().__init__(message or EXPLANATIONS.get(status, ""))
        self.status = status
        self.message = message
        self.headers = tuple(headers)
        self.detail = detail
        self.method = method
        self.content_type = content_type


def status_for(exc: E.TesseraError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: BaseException, accept: str | None, *, method: str = "",
                   content_type: str = "") -> Response:
    """The response for an error raised by the application (TesseraError or HTTPError)."""
    if isinstance(exc, HTTPError):
        return render_error(exc.status, exc.message, accept, exc.headers, detail=exc.detail,
                            method=exc.method or method,
                            content_type=exc.content_type or content_type)
    if isinstance(exc, E.TesseraError):
        status = status_for(exc)
        if status == 500:     # internal conditions are logged, never described to the client
            return render_error(500, "", accept)
        return render_error(status, exc.message, accept, method=method,
                            content_type=content_type)
    return render_error(500, "", accept)


_BR = re.compile(r"<br.*?>", re.I | re.S)
_COMMENT = re.compile(r"<!--|-->")
_TAG = re.compile(r"<.*?>", re.S)


def _strip_tags(value: str) -> str:
    value = value.replace("\n", " ").replace("\r", "")
    value = _BR.sub("\n", value)
    value = _COMMENT.sub("", value)
    return _TAG.sub("", value)


def _html_escape(value: str) -> str:
    return html.escape(value, True).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _fragment(status: int, message: str, detail: str, method: str, content_type: str,
              escape) -> str:
    """WebOb's body_template for this status, filled (escaped for HTML)."""
    if status == 405:
        return (f"The method {escape(method)} is not allowed for this resource. "
                f"<br /><br />\n{escape(detail or message)}")
    if status == 415:
        return (f"The request media type {escape(content_type)} is not supported by this "
                f"server.\n<br /><br />\n{escape(detail or message)}")
    if status == 501:
        return (f"\nThe request method {escape(method)} is not implemented for this server. "
                f"<br /><br />\n{escape(detail)}")
    explanation = message or EXPLANATIONS.get(status, "")
    return f"{escape(explanation)}<br /><br />\n{escape(detail)}\n\n"


def _same(value: str) -> str:
    return value


def negotiate(accept: str | None) -> str:
    """WebOb's choice between text/html and application/json (else text/plain)."""
    if not accept:
        return "text/plain"
    best, best_q = "text/plain", 0.0
    for offer in ("text/html", "application/json"):
        otype, osub = offer.split("/")
        q_found, spec_found = None, -1
        for part in accept.split(","):
            fields = part.strip().split(";")
            rng = fields[0].strip().lower()
            if "/" not in rng:
                continue
            rtype, rsub = rng.split("/", 1)
            if rtype == otype and rsub == osub:
                spec = 2
            elif rtype == otype and rsub == "*":
                spec = 1
            elif rtype == "*" and rsub == "*":
                spec = 0
            else:
                continue
            if spec <= spec_found:
                continue
            q = 1.0
            for param in fields[1:]:
                key, _, val = param.strip().partition("=")
                if key.strip().lower() == "q":
                    try:
                        q = float(val)
                    except ValueError:
                        q = 0.0
            q_found, spec_found = q, spec
        if q_found is not None and q_found > best_q:
            best, best_q = offer, q_found
    return best


def render_error(status: int, message: str, accept_header: str | None,
                 headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (), *,
                 detail: str = "", method: str = "", content_type: str = "") -> Response:
    """Glance's (WebOb's) error response for `status`, negotiated on the request's Accept."""
    title = TITLES.get(status, "Error")
    status_line = f"{status} {title}"
    kind = negotiate(accept_header)
    if kind == "application/json":
        fragment = _fragment(status, message, detail, method, content_type, _same)
        body = json.dumps({"message": fragment, "code": status_line, "title": title})
        ctype = "application/json"
    elif kind == "text/html":
        fragment = _fragment(status, message, detail, method, content_type, _html_escape)
        body = (f"<html>\n <head>\n  <title>{status_line}</title>\n </head>\n <body>\n"
                f"  <h1>{status_line}</h1>\n  {fragment}\n </body>\n</html>")
        ctype = "text/html; charset=UTF-8"
    else:
        fragment = _fragment(status, message, detail, method, content_type, _same)
        body = f"{status_line}\n\n{_strip_tags(fragment)}"
        ctype = "text/plain; charset=UTF-8"
    out = [("Content-Type", ctype)]
    out.extend(headers)
    return Response(status, out, body.encode("utf-8"))


class BodyIncomplete(Exception):
    """The request body could not be read to its end: the client went away, paused longer
    than body_timeout, or broke the chunked framing (then `status` is 400). Raised into the
    handler by Body reads; the server closes the connection after it."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
