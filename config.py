# The node's configuration: a TOML file, then command-line flags, into frozen dataclasses.
# Invariants: built once in the composition root (cli.py) and passed down; nothing reads the
# environment or a global; unknown keys are errors, never silently ignored.
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tessera.engine.config import EngineConfig
from tessera.http.config import ServerConfig

DEFAULT_DATA_DIR = Path("./tessera-data")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    engine: EngineConfig
    server: ServerConfig


def _take(cls: type, table: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(unknown)}")
    return dict(table)


def load(path: Path | None = None, *, data_dir: str | None = None,
         bind: str | None = None) -> Config:
    """Build the configuration: embedded defaults, then the TOML file, then flags."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    unknown = sorted(set(raw) - {"node", "engine", "api"})
    if unknown:
        raise ConfigError(f"unknown table(s): {', '.join(unknown)}")
    node = raw.get("node", {})
    extra = sorted(set(node) - {"id", "data_dir"})
    if extra:
        raise ConfigError(f"unknown key(s) in [node]: {', '.join(extra)}")
    eng = _take(EngineConfig, raw.get("engine", {}), "engine")
    eng.pop("data_dir", None)
    engine = EngineConfig(data_dir=Path(data_dir or node.get("data_dir") or DEFAULT_DATA_DIR),
                          node_id=node.get("id", "local"), **eng)
    api = dict(raw.get("api", {}))
    api_bind = bind or api.pop("bind", None)
    server = ServerConfig(**_take(ServerConfig, api, "api"))
    if api_bind:
        host, _, port = api_bind.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"bind must be HOST:PORT, got {api_bind!r}")
        server = replace(server, host=host.strip("[]"), port=int(port))
    return Config(engine=engine, server=server)
