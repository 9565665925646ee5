# Fixtures for the image-location tests: a local origin web server on 127.0.0.1 that serves
# single Range requests and can change its content, go down, stall mid-body or leave out
# its Content-Length, and an in-process node with
# a local default store and a read-only http store whose [import] filter explicitly allows
# that origin (loopback is refused otherwise).
# Invariants: traffic only to 127.0.0.1; everything started here stops with the test.
from __future__ import annotations

import importlib.util
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tessera.engine.config import EngineConfig
from tessera.engine.stores import StoreConfig
from tessera.http.api import build_app
from tessera.http.config import ServerConfig
from tessera.http.webdownload import ImportConfig

_TESTS = Path(__file__).resolve().parent.parent
_RANGE = re.compile(r"^range:\s*bytes=(\d+)-(\d*)\s*$", re.I | re.M)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


api_support = sys.modules.get("tessera_tests_api_support") or \
    _load("tessera_tests_api_support", _TESTS / "api" / "conftest.py")


@dataclass
class RangeOrigin:
    """GET /<name> serves files[name], honouring one `Range: bytes=a-b`; `down` answers 503
    to everything; `seen` lists (path, "a-b" of the Range header or None) per request.
    `stall_after`: serve the file's bytes before that offset, then nothing more (or, with
    `drip`, one byte every `drip` seconds) until the client hangs up, counted in `hung_up`
    (a Range starting past it stalls at once); `no_length`:
    no Content-Length, the body ends with the connection."""
    port: int = 0
    files: dict = field(default_factory=dict)
    seen: list = field(default_factory=list)
    down: bool = False
    ignore_range: bool = False
    stall_after: int | None = None
    drip: float = 0.0
    no_length: bool = False
    hung_up: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    @property
    def ranged(self) -> list:
        return [r for _, r in self.seen if r is not None]

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                piece = await stream.receive_some(4096)
                if not piece:
                    return
                head += piece
            text = head.decode("latin-1")
            method, target = text.split(" ", 2)[:2]
            m = _RANGE.search(text)
            self.seen.append((target, None if m is None else f"{m.group(1)}-{m.group(2)}"))
            body = self.files.get(target.lstrip("/"))
            if self.down:
                await stream.send_all(b"HTTP/1.1 503 Service Unavailable\r\n"
                                      b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            elif body is None or method != "GET":
                await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                                      b"Connection: close\r\n\r\n")
            elif m is None or self.ignore_range:
                await self._send(stream, b"200 OK", [], body, 0)
            else:
                first = int(m.group(1))
                last = int(m.group(2)) if m.group(2) else len(body) - 1
                if first >= len(body):
                    await stream.send_all(
                        b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */%d\r\n"
                        b"Content-Length: 0\r\nConnection: close\r\n\r\n" % len(body))
                    return
                last = min(last, len(body) - 1)
                await self._send(stream, b"206 Partial Content",
                                 [b"Content-Range: bytes %d-%d/%d" % (first, last, len(body))],
                                 body[first:last + 1], first)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def _send(self, stream, status: bytes, extra: list, body: bytes,
                    first: int) -> None:
        """`body` holds the file's bytes from offset `first` on."""
        length = [] if self.no_length else [b"Content-Length: %d" % len(body)]
        head = [b"HTTP/1.1 " + status, *length, b"Connection: close", *extra]
        await stream.send_all(b"\r\n".join(head) + b"\r\n\r\n")
        view = memoryview(body)
        end = len(body) if self.stall_after is None else \
            max(0, min(self.stall_after - first, len(body)))
        for i in range(0, end, 1 << 20):
            await stream.send_all(view[i:min(i + (1 << 20), end)])
        if end < len(body):
            await self._stall(stream, view[end:])

    async def _stall(self, stream, rest: memoryview) -> None:
        """Send `rest` a byte per `drip` seconds (nothing at all without `drip`) until the
        client hangs up; then count it."""
        async def dripping() -> None:
            if not self.drip:
                await trio.sleep_forever()
            try:
                for i in range(len(rest)):
                    await trio.sleep(self.drip)
                    await stream.send_all(rest[i:i + 1])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await trio.sleep_forever()

        async with trio.open_nursery() as n:
            n.start_soon(dripping)
            try:
                while await stream.receive_some(4096):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            self.hung_up += 1
            n.cancel_scope.cancel()


@pytest.fixture
async def origin(nursery) -> RangeOrigin:
    o = RangeOrigin()
    await nursery.start(o.serve)
    return o


def allow(origin: RangeOrigin, **kw) -> ImportConfig:
    """The [import] filter of a site that explicitly allows the local origin."""
    return ImportConfig(allowed_hosts=("127.0.0.1",), allowed_ports=(origin.port,), **kw)


WEB_STORES = (StoreConfig("local", description="Local disks", default=True),
              StoreConfig("web", type="http", description="Web origins"))


@pytest.fixture
async def make_node(tmp_path, nursery):
    """await make_node(imports=..., server=..., stores=..., **EngineConfig fields) -> an
    in-process client whose engine runs its background runner."""
    made = []

    async def make(imports: ImportConfig | None = None, server: ServerConfig | None = None,
                   stores=WEB_STORES, **engine_kw):
        from tessera.engine.engine import Engine
        cfg = EngineConfig(data_dir=tmp_path / f"n{len(made)}" / "data", durable=False,
                           stores=stores, **engine_kw)
        engine = await Engine.open(cfg)
        scope = trio.CancelScope()
        made.append((engine, scope))

        async def background(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await engine.run_background(task_status=task_status)

        await nursery.start(background)
        app = build_app(engine, server or ServerConfig(), imports=imports or ImportConfig())
        return api_support.Client(app, engine)

    yield make
    for engine, scope in made:          # flows end (and record their end) before the close
        scope.cancel()
        await trio.sleep(0.05)
        await engine.aclose()


@pytest.fixture
async def node(make_node, origin):
    """A noauth node with an http store that allows the local origin."""
    return await make_node(imports=allow(origin))


async def settle(client, image_id: str) -> dict:
    """Poll until the image left `importing` and its tasks finished; its JSON."""
    with trio.fail_after(20):
        while True:
            img = (await client.get(f"/v2/images/{image_id}")).json()
            tasks = (await client.get(f"/v2/images/{image_id}/tasks")).json()["tasks"]
            if img["status"] != "importing" and \
                    all(t["status"] in ("success", "failure") for t in tasks):
                return img
            await trio.sleep(0.02)


async def register(client, origin: RangeOrigin, name: str, data: bytes, **body) -> dict:
    """Serve `data` as `name`, register it at a new image; the settled image JSON."""
    origin.files[name] = data
    img = await client.create(name=name)
    r = await client.post(f"/v2/images/{img['id']}/locations",
                          {"url": origin.url(name), **body})
    assert r.status == 202, r.body
    return await settle(client, img["id"])


async def evict(client) -> int:
    """Drop every cache-resident chunk (the pruner with a budget of 0); how many."""
    from tessera.engine.pruner import Pruner
    result = await Pruner(client.engine.chunks, budget=0).run_once()
    return result.evicted_chunks


@pytest.fixture
def loc():
    """The helpers above as one fixture: loc.allow, loc.register, loc.settle, loc.evict,
    loc.identity(project, roles), loc.client(app, engine) (test modules cannot import a conftest under
    --import-mode=importlib)."""
    return types.SimpleNamespace(allow=allow, register=register, settle=settle, evict=evict,
                                 stores=WEB_STORES, identity=api_support._identity,
                                 client=api_support.Client)
