# A small Images API v2 client over the standard library's http.client, for tessera and
# any Glance: create, upload, show, list (following `next` links) and ranged downloads.
# Invariants: no image is ever held whole in memory (bodies go out and come in by
# BLOCK-sized pieces); one HTTPConnection per thread (http.client is not thread-safe);
# failures are ClientError with the status and the server's message.
from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlencode, urlsplit

BLOCK = 1024 * 1024


class ClientError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Endpoint:
    url: str                   # e.g. http://127.0.0.1:9292 (the /v2 prefix is added here)
    token: str | None = None   # X-Auth-Token, for Glance behind Keystone or tessera tokens
    timeout: float = 60.0

    def connect(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"not an http(s) URL: {self.url!r}")
        cls = http.client.HTTPSConnection if parts.scheme == "https" \
            else http.client.HTTPConnection
        return cls(parts.hostname, parts.port, timeout=self.timeout)

    def path(self, rest: str) -> str:
        base = urlsplit(self.url).path.rstrip("/")
        return f"{base}{rest}"

    def headers(self, **extra: str) -> dict[str, str]:
        out = {"User-Agent": "tessera-client", **extra}
        if self.token:
            out["X-Auth-Token"] = self.token
        return out


def _fail(resp: http.client.HTTPResponse, what: str) -> ClientError:
    body = resp.read(64 * 1024).decode("utf-8", "replace").strip()
    try:
        doc = json.loads(body)
        body = doc.get("message") or doc.get("error", {}).get("message") or body
    except (ValueError, AttributeError):
        body = " ".join(body.split())[:300]
        head = f"{resp.status} {resp.reason}"
        body = body[len(head):].strip() if body.startswith(head) else body   # WebOb's text
    return ClientError(f"{what}: {resp.status} {resp.reason}: {body}", resp.status)


class Client:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def _json(self, method: str, path: str, doc: dict | list | None = None,
              content_type: str = "application/json") -> dict:
        ep = self.endpoint
        conn = ep.connect()
        try:
            body = None if doc is None else json.dumps(doc).encode()
            headers = ep.headers(Accept="application/json")
            if body is not None:
                headers["Content-Type"] = content_type
            conn.request(method, ep.path(path), body=body, headers=headers)
            resp = conn.getresponse()
            if resp.status >= 300:
                raise _fail(resp, f"{method} {path}")
            data = resp.read()
            return json.loads(data) if data else {}
        except OSError as exc:
            raise ClientError(f"{method} {ep.url}{path}: {exc}") from exc
        finally:
            conn.close()

    def create_image(self, fields: dict) -> dict:
        return self._json("POST", "/v2/images", fields)

    def get_image(self, image_id: str) -> dict:
        return self._json("GET", f"/v2/images/{image_id}")

    def list_images(self, page_size: int = 100) -> Iterator[dict]:
        path = "/v2/images?" + urlencode({"limit": page_size})
        while path:
            doc = self._json("GET", path)
            yield from doc.get("images", [])
            nxt = doc.get("next")
            path = nxt if nxt and doc.get("images") else None

    def upload(self, image_id: str, source: BinaryIO, size: int,
               progress: Callable[[int], None] = lambda n: None) -> None:
        """PUT the image data with Content-Length, BLOCK by BLOCK."""
        ep = self.endpoint
        conn = ep.connect()
        path = f"/v2/images/{image_id}/file"
        try:
            conn.putrequest("PUT", ep.path(path), skip_accept_encoding=True)
            for key, value in ep.headers(**{"Content-Type": "application/octet-stream",
                                            "Content-Length": str(size)}).items():
                conn.putheader(key, value)
            conn.endheaders()
            sent = 0
            try:
                while sent < size:
                    block = source.read(min(BLOCK, size - sent))
                    if not block:
                        raise ClientError(f"{getattr(source, 'name', 'input')} ended after "
                                          f"{sent} of {size} bytes")
                    conn.send(block)
                    sent += len(block)
                    progress(len(block))
            except (BrokenPipeError, ConnectionResetError):
                pass        # the server refused early (413, 409...): its answer says why
            resp = conn.getresponse()
            if resp.status >= 300:
                raise _fail(resp, f"PUT {path}")
            resp.read()
        except OSError as exc:
            raise ClientError(f"PUT {ep.url}{path}: {exc}") from exc
        finally:
            conn.close()

    def open_range(self, image_id: str, start: int = 0, end: int | None = None
                   ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, bool]:
        """GET the image data from `start` (to `end` inclusive); (conn, response, ranged):
        ranged is False when the server sent the whole image (200) instead of the part
        (a server without Range support). The caller reads and closes."""
        ep = self.endpoint
        conn = ep.connect()
        path = f"/v2/images/{image_id}/file"
        headers = ep.headers()
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            conn.request("GET", ep.path(path), headers=headers)
            resp = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise ClientError(f"GET {ep.url}{path}: {exc}") from exc
        if resp.status == 206:
            return conn, resp, True
        if resp.status == 200:
            return conn, resp, False
        try:
            raise _fail(resp, f"GET {path}")
        finally:
            conn.close()
