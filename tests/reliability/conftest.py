# Fixtures of the reliability suite: the in-process API client of tests/api (make_api, api,
# trusted, identity, make_client) re-exported here, plus what the edge, fuzz and crash tests
# share. Invariants: loaded by path (tests have no packages); nothing here starts a process.
from __future__ import annotations

import importlib.util
import json
import resource
import sys
import tempfile
from pathlib import Path

import pytest
import trio

_spec = importlib.util.spec_from_file_location(
    "tessera_tests_api_conftest", Path(__file__).parent.parent / "api" / "conftest.py")
_api = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _api
_spec.loader.exec_module(_api)

make_api = _api.make_api
api = _api.api
trusted = _api.trusted
identity = _api.identity
make_client = _api.make_client
Client = _api.Client

_root_spec = importlib.util.spec_from_file_location(
    "tessera_tests_root_conftest", Path(__file__).parent.parent / "conftest.py")
_root = importlib.util.module_from_spec(_root_spec)
sys.modules[_root_spec.name] = _root
_root_spec.loader.exec_module(_root)
launch = _root.launch          # launch(base, *args) -> RunningServer (a real node subprocess)


class Raw:
    """A raw HTTP/1.1 client on a trio stream (httpx normalises requests, so it cannot send
    the shapes these tests need): send bytes, read one response, or wait for the end."""

    def __init__(self, stream) -> None:
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

    async def response(self) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.lower()] = value.strip()
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


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to `wanted` if the hard limit allows (a node
    started afterwards inherits it); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


@pytest.fixture(scope="session")
def tools():
    """What the reliability modules share (conftest modules cannot be imported by name)."""
    from types import SimpleNamespace
    return SimpleNamespace(Raw=Raw, launch=launch, raise_nofile=raise_nofile,
                           record=record_figure)


# Figures of the last run (kills survived, inputs tried, connections held), quoted by
# docs/reliability.md; kept outside the source tree.
FIGURES_FILE = Path(tempfile.gettempdir()) / "tessera-reliability-figures.json"


def record_figure(name: str, value) -> None:
    """Keep one figure of this run in FIGURES_FILE (merged with the others)."""
    try:
        figures = json.loads(FIGURES_FILE.read_text())
    except (OSError, ValueError):
        figures = {}
    figures[name] = value
    FIGURES_FILE.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
