# What every handler needs besides the request and the caller: the engine facade and the
# server configuration, and the per-application cache of rendered image JSON.
# Invariants: built once by build_app; the fields never change.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tessera.http.config import ServerConfig
from tessera.http.render import ImageJsonCache
from tessera.http.webdownload import ImportConfig


@dataclass(frozen=True)
class ApiContext:
    engine: Any          # tessera.engine.engine.Engine (duck-typed: tests may pass a facade)
    cfg: ServerConfig
    image_json: ImageJsonCache = field(default_factory=ImageJsonCache)
    imports: ImportConfig = field(default_factory=ImportConfig)
    locations: Any = None     # tessera.engine.locations.Locations (None without an engine)

    @property
    def store_ids(self) -> tuple[str, ...]:
        """The engine's store ids, the default first."""
        return tuple(getattr(self.engine, "store_ids", ("default",)))

    @property
    def multi_store(self) -> bool:
        """Named stores are configured ([[stores]]): the multi-store API is on."""
        stores = getattr(self.engine, "stores", None)
        return bool(getattr(stores, "multi", False))
