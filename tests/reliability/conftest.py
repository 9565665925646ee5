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


_http_spec = importlib.util.spec_from_file_location(
    "tessera_tests_http_conftest", Path(__file__).parent.parent / "http" / "conftest.py")
_http = importlib.util.module_from_spec(_http_spec)
sys.modules[_http_spec.name] = _http
_http_spec.loader.exec_module(_http)
Raw = _http.Raw                # the raw HTTP/1.1 client of the server tests


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
