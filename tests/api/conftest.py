# In-process driving of the Images API application: real engine (real LMDB and segment files
# in tmp_path), real build_app, no sockets. `api` sends Request values to the app and renders
# raised errors through the same tessera.http.errors path the server uses, so tests see the
# status, headers and body a client would see (minus Content-Length/request-id, which the
# server adds).
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, unquote

import pytest

from tessera.engine.config import EngineConfig
from tessera.engine.errors import TesseraError, TooLarge
from tessera.http.api import build_app
from tessera.http.config import ServerConfig
from tessera.http.errors import HTTPError, error_response
from tessera.http.message import Headers, Request

class BytesBody:
    """A request body held in memory, handed out in small pieces like a socket would."""

    def __init__(self, data: bytes, *, chunked: bool = False, piece: int = 64 * 1024) -> None:
        self.data = data
        self.length = None if chunked else len(data)
        self.present = bool(data) or chunked
        self.piece = piece
        self.consumed = False

    async def read_all(self, limit: int) -> bytes:
        self.consumed = True
        if len(self.data) > limit:
            raise TooLarge("The body of your request was too large for this server.")
        return self.data

    def __aiter__(self):
        return self._pieces()

    async def _pieces(self):
        self.consumed = True
        for i in range(0, len(self.data), self.piece):
            yield memoryview(self.data[i:i + self.piece])


@dataclass
class Result:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


@dataclass
class Client:
    app: object
    engine: object
    default_headers: dict = field(default_factory=dict)

    def as_(self, **headers: str) -> "Client":
        """The same app with other default headers (identity in trusted-headers mode)."""
        merged = dict(self.default_headers)
        merged.update(headers)
        return replace(self, default_headers=merged)

    async def request(self, method: str, target: str, body: bytes | None = None, *,
                      json_body=None, headers: dict | None = None,
                      chunked: bool = False) -> Result:
        hdrs = {"Host": "127.0.0.1:9292", "Accept": "application/json"}
        hdrs.update(self.default_headers)
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        path, _, qs = target.partition("?")
        req = Request(method=method, target=target, path=unquote(path),
                      query=parse_qsl(qs, keep_blank_values=True),
                      headers=Headers(tuple((k.lower(), v) for k, v in hdrs.items())),
                      body=BytesBody(body or b"", chunked=chunked), request_id="req-test",
                      host_url="http://127.0.0.1:9292")
        try:
            resp = await self.app(req)
        except (TesseraError, HTTPError) as exc:
            resp = error_response(exc, req.headers.get("accept"), method=method,
                                  content_type=req.headers.get("content-type") or "")
        data = resp.body
        if not isinstance(data, (bytes, bytearray)):
            parts = []
            async for piece in data:
                parts.append(bytes(piece))
            data = b"".join(parts)
            assert len(data) == resp.content_length
        return Result(resp.status, list(resp.headers), bytes(data))

    async def get(self, target: str, **kw) -> Result:
        return await self.request("GET", target, **kw)

    async def post(self, target: str, json_body=None, **kw) -> Result:
        return await self.request("POST", target, json_body=json_body, **kw)

    async def put(self, target: str, body: bytes | None = None, **kw) -> Result:
        return await self.request("PUT", target, body, **kw)

    async def patch(self, target: str, ops, *, media="application/openstack-images-v2.1-json-patch",
                    **kw) -> Result:
        return await self.request("PATCH", target, json.dumps(ops).encode(),
                                  headers={"Content-Type": media, **kw.pop("headers", {})}, **kw)

    async def delete(self, target: str, **kw) -> Result:
        return await self.request("DELETE", target, **kw)

    async def create(self, **fields) -> dict:
        r = await self.post("/v2/images", {"disk_format": "raw", "container_format": "bare",
                                           **fields})
        assert r.status == 201, r.body
        return r.json()

    async def upload(self, image_id: str, data: bytes) -> Result:
        return await self.put(f"/v2/images/{image_id}/file", data,
                              headers={"Content-Type": "application/octet-stream"})


async def make_client(tmp_path, *, server: ServerConfig | None = None, **engine_kw) -> Client:
    from tessera.engine.engine import Engine
    cfg = EngineConfig(data_dir=tmp_path / "data", durable=False, **engine_kw)
    engine = await Engine.open(cfg)
    return Client(build_app(engine, server or ServerConfig()), engine)


@pytest.fixture
async def make_api(tmp_path):
    """Factory: await make_api(server=ServerConfig(...), **EngineConfig fields)."""
    made: list[Client] = []

    async def make(server: ServerConfig | None = None, **engine_kw) -> Client:
        client = await make_client(tmp_path / f"e{len(made)}", server=server, **engine_kw)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.engine.aclose()


@pytest.fixture
async def api(tmp_path):
    """A noauth application over a fresh engine (every request is admin)."""
    client = await make_client(tmp_path)
    yield client
    await client.engine.aclose()


def _identity(project: str | None, roles: str = "member,reader", user: str = "u") -> dict:
    headers = {"X-Identity-Status": "Confirmed", "X-Roles": roles, "X-User-Id": user}
    if project is not None:
        headers["X-Project-Id"] = project
    return headers


@pytest.fixture
def identity():
    """identity(project, roles="member,reader") -> keystonemiddleware headers."""
    return _identity


@pytest.fixture
async def trusted(tmp_path):
    """A trusted-headers application; use `trusted.as_(**identity(PROJECT_A))`."""
    client = await make_client(tmp_path, server=ServerConfig(auth="trusted-headers"))
    yield client
    await client.engine.aclose()
