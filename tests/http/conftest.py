# Fixtures for the server tests: a small application exercising every server feature, a raw
# HTTP/1.1 client that reads responses byte-exactly, and a server started on 127.0.0.1:0.
from __future__ import annotations

import hashlib
import json
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
import trio
import trio.testing

from tessera.engine.errors import CorruptData, NotFound
from tessera.http.config import ServerConfig
from tessera.http.message import Response
from tessera.http.server import serve, serve_stream

PIECE = 64 * 1024


class Raw:
    """A raw HTTP/1.1 client on a trio stream (httpx normalises requests, so it cannot send
    the shapes these tests need): send bytes, read one response (status, headers, body), or
    wait for the end. Also used by tests/reliability (loaded there by path)."""

    def __init__(self, stream):
        self.stream = stream
        self.buf = b""

    @classmethod
    async def connect(cls, port: int) -> "Raw":
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(1 << 20)
        if not data:
            raise EOFError
        self.buf += data

    async def response(self, head_only: bool = False):
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.lower()] = value.strip()
        body = b""
        if status >= 200 and not head_only:
            n = int(headers.get("content-length", 0))
            while len(self.buf) < n:
                await self._fill()
            body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    async def closed(self) -> bool:
        """True once the server ended the connection (clean end or reset)."""
        try:
            while True:
                await self._fill()
        except EOFError:
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            return True

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()


def get(path: str, *headers: str) -> bytes:
    extra = "".join(h + "\r\n" for h in headers)
    return f"GET {path} HTTP/1.1\r\nHost: example.test:9292\r\n{extra}\r\n".encode()


async def app(request):
    path = request.path
    if path == "/info":
        doc = {"method": request.method, "path": request.path, "target": request.target,
               "query": request.query, "host_url": request.host_url,
               "request_id": request.request_id, "present": request.body.present,
               "length": request.body.length, "client": list(request.client)}
        return Response(200, [("Content-Type", "application/json")], json.dumps(doc).encode())
    if path == "/echo":
        return Response(200, [("Content-Type", "application/octet-stream")],
                        await request.body.read_all(4 << 20))
    if path == "/count":
        total = 0
        pieces = 0
        async for piece in request.body:
            total += len(piece)
            pieces += 1
        return Response(200, [], f"{total} {pieces}".encode())
    if path == "/digest":
        h = hashlib.sha256()
        async for piece in request.body:
            h.update(piece)
        return Response(200, [], h.hexdigest().encode())
    if path == "/boom":
        raise RuntimeError("secret internal detail")
    if path == "/missing":
        raise NotFound("No image found with ID x")
    if path == "/noread":
        return Response(201, [], b"created")
    if path == "/stream":
        async def pieces():
            data = memoryview(bytes(range(256)) * (PIECE // 256))
            for _ in range(3):
                yield data
        return Response(200, [], pieces(), content_length=3 * PIECE)
    if path == "/broken":
        async def pieces():
            yield b"x" * PIECE
            raise CorruptData("chunk failed verification")
        return Response(200, [], pieces(), content_length=3 * PIECE)
    if path == "/slow":
        await trio.sleep(float(dict(request.query).get("s", "1")))
        return Response(200, [], b"slow done")
    if path == "/empty":
        return Response(204, [("Content-Type", "text/html; charset=UTF-8")], b"")
    return Response(404, [], b"")


CFG = ServerConfig(host="127.0.0.1", port=0, header_timeout=5.0, idle_timeout=10.0,
                   body_timeout=3.0, shutdown_grace=5.0)


@pytest.fixture
def memory_server():
    """memory_server(cfg=CFG) -> async context manager yielding a Raw client on an in-memory
    stream served by serve_stream."""

    @asynccontextmanager
    async def connect(cfg: ServerConfig = CFG, application=app):
        client, server = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_stream, application, cfg, server)
            raw = Raw(client)
            yield raw
            nursery.cancel_scope.cancel()

    return connect


@pytest.fixture
def socket_server():
    """socket_server(**cfg_changes) -> async context manager yielding (host, port, stop)."""

    @asynccontextmanager
    async def start(application=app, **changes):
        cfg = replace(CFG, **changes)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(
                lambda task_status: serve(application, cfg, task_status=task_status, stop=stop))
            yield host, port, stop
            nursery.cancel_scope.cancel()

    return start


async def connect(port: int) -> Raw:
    return await Raw.connect(port)


@pytest.fixture
def kit():
    """Helpers for the test modules (conftest modules cannot be imported by name)."""
    from types import SimpleNamespace
    return SimpleNamespace(get=get, connect=connect, Raw=Raw, PIECE=PIECE, app=app, CFG=CFG)
