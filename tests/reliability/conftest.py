# Fixtures of the reliability suite: the in-process API client of tests/api (make_api, api,
# trusted, identity, make_client) re-exported here, plus what the edge, fuzz and crash tests
# share. Invariants: loaded by path (tests have no packages); nothing here starts a process.
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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
