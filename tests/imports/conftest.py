# Fixtures for the import tests: an in-process application whose engine runs its background
# runner (import flows) in the test's nursery, and a local HTTP origin on 127.0.0.1 for
# web-download (a real socket server the test config allows explicitly).
# Invariants: traffic only to 127.0.0.1; everything started here stops with the test.
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tessera.engine.config import EngineConfig
from tessera.http.api import build_app
from tessera.http.config import ServerConfig
from tessera.http.webdownload import ImportConfig

_TESTS = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module        # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


api_support = _load("tessera_tests_api_support", _TESTS / "api" / "conftest.py")


@pytest.fixture
async def make_importer(tmp_path, nursery):
    """Factory: await make_importer(imports=ImportConfig(...), server=..., **EngineConfig
    fields) -> an in-process client whose engine runs its background runner."""
    made = []

    async def make(imports: ImportConfig | None = None, server: ServerConfig | None = None,
                   **engine_kw):
        from tessera.engine.engine import Engine
        cfg = EngineConfig(data_dir=tmp_path / f"e{len(made)}" / "data", durable=False,
                           **engine_kw)
        engine = await Engine.open(cfg)
        made.append(engine)
        await nursery.start(engine.run_background)
        app = build_app(engine, server or ServerConfig(), imports=imports or ImportConfig())
        return api_support.Client(app, engine)

    yield make
    for engine in made:
        await engine.aclose()


@pytest.fixture
async def api(make_importer):
    return await make_importer()


@dataclass
class Origin:
    """A tiny HTTP/1.1 server: GET /<name> serves files[name]; other behaviours by name."""
    port: int = 0
    files: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{name}"

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, stream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = await stream.receive_some(4096)
            if not piece:
                return
            data += piece
        line = data.split(b"\r\n", 1)[0].decode()
        self.requests.append(data.decode(errors="replace"))
        name = line.split()[1].lstrip("/")
        try:
            if name == "slow":
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nab")
                await trio.sleep(30)
            elif name == "redirect":
                await stream.send_all(b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/"
                                      b"\r\nContent-Length: 0\r\n\r\n")
            elif name in self.files:
                body = self.files[name]
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                      b"Connection: close\r\n\r\n" % len(body))
                for i in range(0, len(body), 65536):
                    await stream.send_all(body[i:i + 65536])
            elif name.startswith("chunked-"):
                body = self.files[name[len("chunked-"):]]
                await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(0, len(body), 65536):
                    part = body[i:i + 65536]
                    await stream.send_all(b"%x\r\n%s\r\n" % (len(part), part))
                await stream.send_all(b"0\r\n\r\n")
            else:
                await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()


@pytest.fixture
async def origin(nursery) -> Origin:
    o = Origin()
    await nursery.start(o.serve)
    return o


@pytest.fixture
def identity():
    """identity(project, roles="member,reader") -> keystonemiddleware headers."""
    return api_support._identity


async def _settle(client, image_id: str) -> dict:
    """Poll until the image's import finished (lock gone, tasks finished); its JSON."""
    with trio.fail_after(20):
        while True:
            img = (await client.get(f"/v2/images/{image_id}")).json()
            tasks = (await client.get(f"/v2/images/{image_id}/tasks")).json()["tasks"]
            if img["status"] != "importing" and "os_glance_import_task" not in img and \
                    all(t["status"] in ("success", "failure") for t in tasks):
                return img
            await trio.sleep(0.02)


@pytest.fixture
def settle():
    """await settle(client, image_id) -> the image's JSON once its import has finished."""
    return _settle
