# What every handler needs besides the request and the caller: the engine facade and the
# server configuration. Invariants: built once by build_app; immutable.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.http.config import ServerConfig


@dataclass(frozen=True)
class ApiContext:
    engine: Any          # tessera.engine.engine.Engine (duck-typed: tests may pass a facade)
    cfg: ServerConfig
