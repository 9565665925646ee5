# Fixtures of the metadefs tests: the in-process API client of tests/api (real engine, real
# build_app, no sockets) and the subprocess node and CLI runner of tests/clients, loaded from
# their conftest files so both suites drive tessera the same way.
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tessera.http.config import ServerConfig

_TESTS = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module        # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


api_support = _load("tessera_tests_api_support", _TESTS / "api" / "conftest.py")
client_support = _load("tessera_tests_client_support", _TESTS / "clients" / "conftest.py")


@pytest.fixture
async def api(tmp_path):
    """A noauth application over a fresh engine (every request is admin)."""
    client = await api_support.make_client(tmp_path)
    yield client
    await client.engine.aclose()


@pytest.fixture
async def trusted(tmp_path):
    """A trusted-headers application; `trusted.as_(**identity("p1", "reader"))`."""
    client = await api_support.make_client(tmp_path, server=ServerConfig(auth="trusted-headers"))
    yield client
    await client.engine.aclose()


@pytest.fixture
def identity():
    return api_support._identity
