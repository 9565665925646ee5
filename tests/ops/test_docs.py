# The operator documentation stays complete: every route of the route table is listed in
# docs/api-compat.md and every configuration option in docs/configuration.md.
from __future__ import annotations

import importlib
from dataclasses import fields
from pathlib import Path

from tessera.http import api
from tessera.http.api_context import ApiContext

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_route_is_in_api_compat():
    text = (DOCS / "api-compat.md").read_text()
    ctx = ApiContext.__new__(ApiContext)        # the table only binds handlers to it
    missing = [f"{r.method} {r.pattern}" for r in api.routes(ctx)
               if f"`{r.method} {r.pattern}`" not in text]
    assert not missing, f"docs/api-compat.md does not list: {missing}"


# (module, class, fields documented elsewhere or internal)
TABLES = [
    ("tessera.engine.config", "EngineConfig", {"data_dir", "node_id"}),   # [node] id, data_dir
    ("tessera.http.config", "ServerConfig", {"host", "port"}),            # [api] bind
    ("tessera.logs", "LogConfig", set()),
    ("tessera.http.webdownload", "ImportConfig", set()),
    ("tessera.config", "ClusterConfig", {"node_id", "nodes"}),            # [[cluster.nodes]]
    ("tessera.engine.stores", "StoreConfig", set()),
]


def test_every_option_is_in_configuration_md():
    text = (DOCS / "configuration.md").read_text()
    missing = []
    for module, name, skip in TABLES:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue                                  # that part is not built yet
        missing += [f"{name}.{f.name}" for f in fields(cls)
                    if f.name not in skip and f"| `{f.name}` |" not in text]
    assert not missing, f"docs/configuration.md does not document: {missing}"


def test_systemd_unit_verifies(tmp_path):
    """docs/tessera.service is a valid Type=notify unit (systemd-analyze verify)."""
    import shutil
    import subprocess
    import sys

    import pytest

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DOCS / "tessera.service").read_text()
    assert "Type=notify" in text and "RestartPreventExitStatus=2" in text
    tessera = Path(sys.executable).with_name("tessera")
    unit = tmp_path / "tessera.service"
    unit.write_text(text.replace("/usr/local/bin/tessera", str(tessera)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    problems = [line for line in proc.stderr.splitlines() if "tessera.service" in line]
    assert proc.returncode == 0 and not problems, proc.stderr
