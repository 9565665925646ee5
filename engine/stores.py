# Named stores (glance-api.md 4, "multi-store"): the node's `[[stores]]`, each a local chunk
# store in its own directory and its own dedup domain.
# Invariants:
# - The default store IS the engine's main chunk store (the data directory): its manifests
#   commit in the same transaction as the image record, as on a single-store node.
# - Every other store is a ChunkStore with its own LMDB index and segments under its path.
#   Its manifest commits in its own index BEFORE the image record lists the store; a record
#   that does not list a store is the truth, so a manifest left behind by a crash between the
#   two commits is garbage that `reconcile()` releases (the cleaner runs it).
# - Records written before stores had names say "default": that name always means the
#   default store.
# - A store of type `http` (Glance's read-only http store) holds no chunks of its own: an
#   image registered at an HTTP location (engine/locations.py) keeps its manifest in the main
#   index, next to the record, and its chunks in the main store's cache tier. So `get()` of
#   an http store is the main store and `is_main()` is true for it; it is never an upload,
#   import or copy target (`writable()`), and it is never the default store.
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tessera.engine.config import EngineConfig, MiB
from tessera.engine.errors import InvalidInput, NotFound
from tessera.engine.records import decode_image, id_from_key

log = logging.getLogger("tessera.stores")

LEGACY_DEFAULT = "default"
TYPES = ("local", "http", "s3")


@dataclass(frozen=True)
class StoreConfig:
    """One `[[stores]]` entry."""
    id: str
    type: str = "local"              # "local" or "http" (read-only, image locations)
    description: str = ""
    default: bool = False
    path: str | None = None          # other than the default store: <data_dir>/stores/<id>
    weight: int = 0
    max_bytes: int | None = None     # cap on this store's segment bytes (None: the disk)
    # type "s3" (engine/objstore): the S3-compatible bucket that holds this store's bytes
    endpoint: str | None = None      # http(s)://host[:port] of the S3 API
    bucket: str | None = None
    region: str = "us-east-1"
    prefix: str = ""                 # prepended to every object name ("tessera/")
    credentials_file: str | None = None   # AWS shared-credentials format, [default] profile
    # bounds on one object-store request: seconds to connect, seconds without a byte, and how
    # long transient failures are retried (then 503)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retry_time: float = 30.0
    # target size of the pack objects an upload is cut into (None: 32 MiB; engine/objstore)
    pack_size: int | None = None
    # Not settable in the file: the composition root takes them from the environment
    # (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) when no file is named.
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


S3_ONLY = ("endpoint", "bucket", "credentials_file", "access_key", "secret_key",
           "session_token", "pack_size")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_s3(c: StoreConfig) -> None:
    """An s3 store names a reachable-looking endpoint and a valid bucket (InvalidInput)."""
    if not c.endpoint:
        raise InvalidInput(f"store {c.id}: type s3 needs an endpoint (http(s)://host:port)")
    scheme, sep, rest = c.endpoint.partition("://")
    if scheme not in ("http", "https") or not sep or not rest.strip("/"):
        raise InvalidInput(f"store {c.id}: endpoint must be an http:// or https:// URL, "
                           f"got {c.endpoint!r}")
    if not c.bucket:
        raise InvalidInput(f"store {c.id}: type s3 needs a bucket")
    if not _BUCKET.fullmatch(c.bucket) or ".." in c.bucket:
        raise InvalidInput(f"store {c.id}: bucket {c.bucket!r} is not a valid S3 bucket name "
                           "(3-63 lowercase letters, digits, dots, hyphens)")
    if not c.region:
        raise InvalidInput(f"store {c.id}: region must not be empty")
    if c.prefix.startswith("/"):
        raise InvalidInput(f"store {c.id}: prefix must not start with /")
    if c.pack_size is not None and not (isinstance(c.pack_size, int) and
                                        MiB <= c.pack_size <= 1024 * MiB):
        raise InvalidInput(f"store {c.id}: pack_size must be between 1 MiB and 1 GiB (bytes)")
    for name in ("connect_timeout", "read_timeout"):
        if not getattr(c, name) > 0:
            raise InvalidInput(f"store {c.id}: {name} must be > 0")
    if not c.retry_time >= 0:
        raise InvalidInput(f"store {c.id}: retry_time must be >= 0")


def check_configs(configs: tuple[StoreConfig, ...]) -> tuple[StoreConfig, ...]:
    """Validated store list, the default store first (InvalidInput when inconsistent)."""
    if not configs:
        return ()
    ids = [c.id for c in configs]
    if len(set(ids)) != len(ids):
        raise InvalidInput("[[stores]] ids must be unique")
    for c in configs:
        if c.type not in TYPES:
            raise InvalidInput(f"store {c.id}: type {c.type!r} is not supported "
                               f"({', '.join(TYPES)})")
        if c.type == "s3":
            check_s3(c)
        else:
            extra = [k for k in S3_ONLY if getattr(c, k) is not None]
            if extra:
                raise InvalidInput(f"store {c.id}: {', '.join(extra)} only apply to type s3")
        if c.type == "s3" and c.default:
            raise InvalidInput(f"store {c.id}: an s3 store cannot be the default store (the "
                               f"default store is the data directory); upload to it by name")
        if c.type == "http" and (c.default or c.path or c.max_bytes is not None):
            raise InvalidInput(f"store {c.id}: an http store is read-only: it cannot be the "
                               f"default and has no path or max_bytes")
        if not c.id or c.id.startswith("os_glance_") or "/" in c.id or "," in c.id:
            raise InvalidInput(f"store id {c.id!r} is reserved or invalid")
    defaults = [c for c in configs if c.default]
    if len(defaults) > 1:
        raise InvalidInput("[[stores]]: only one store may be the default")
    local = [c for c in configs if c.type == "local"]
    if not local:
        raise InvalidInput("[[stores]]: at least one store must be of type local")
    first = defaults[0] if defaults else local[0]
    return (first, *[c for c in configs if c is not first])


class Stores:
    def __init__(self, cfg: EngineConfig, main: Any, configs: tuple[StoreConfig, ...],
                 others: dict[str, Any]) -> None:
        self.cfg = cfg
        self.main = main
        self.configs = configs
        self.multi = bool(configs)
        self.default_id = configs[0].id if configs else LEGACY_DEFAULT
        self._others = others
        self._http = frozenset(c.id for c in configs if c.type == "http")

    @classmethod
    def open(cls, cfg: EngineConfig, main: Any) -> "Stores":
        from tessera.engine.chunkstore import ChunkStore, open_index

        configs = check_configs(tuple(cfg.stores))
        others: dict[str, Any] = {}
        try:
            for sc in configs[1:]:
                if sc.type == "http":
                    continue
                sub = replace(cfg, data_dir=store_path(cfg, sc), stores=(),
                              max_stored_bytes=sc.max_bytes)
                sub.data_dir.mkdir(parents=True, exist_ok=True)
                index = open_index(sub)
                try:
                    if sc.type == "s3":        # its local segments are the cache tier
                        from tessera.engine.objstore.tier import open_tiered
                        others[sc.id] = open_tiered(sub, index, sc)
                    else:
                        others[sc.id] = ChunkStore.open(sub, index)
                except BaseException:
                    index.close()
                    raise
        except BaseException:
            for store in others.values():
                store.close()
                store.index.close()
            raise
        return cls(cfg, main, configs, others)

    def close(self) -> None:
        for store in self._others.values():
            if getattr(store, "tier", None) is not None:
                store.tier.close()
            store.close()
            store.index.close()

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.configs) or (LEGACY_DEFAULT,)

    def canonical(self, name: str) -> str:
        return self.default_id if name == LEGACY_DEFAULT else name

    def known(self, name: str) -> bool:
        return self.canonical(name) in self.ids

    def is_http(self, name: str | None) -> bool:
        """A read-only http store (image locations)?"""
        return name is not None and name in self._http

    @property
    def http_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.configs if c.type == "http")

    @property
    def writable_ids(self) -> tuple[str, ...]:
        """The stores data can be uploaded, imported or copied into, the default first."""
        return tuple(i for i in self.ids if i not in self._http)

    def get(self, name: str | None) -> Any:
        name = self.default_id if name is None else self.canonical(name)
        if name == self.default_id or name in self._http:
            return self.main
        try:
            return self._others[name]
        except KeyError:
            raise NotFound(f"Unknown store {name}") from None

    def is_main(self, name: str | None) -> bool:
        return name is None or self.canonical(name) == self.default_id or name in self._http

    def holding(self, stores: tuple[str, ...]) -> Any:
        """The chunk store to read an image from: the first listed local store that is
        configured (it holds every chunk), else the first listed configured store (an s3
        store reads its misses from the bucket; an http store's image from its origin)."""
        known = [name for name in stores if self.known(name)]
        types = {c.id: c.type for c in self.configs}
        for name in known:
            if types.get(self.canonical(name), "local") == "local":
                return self.get(name)
        return self.get(known[0]) if known else None

    def others_of(self, stores: tuple[str, ...]) -> list[str]:
        return [self.canonical(s) for s in stores if not self.is_main(s) and self.known(s)]

    async def commit(self, name: str, ingested: Any, image_id: str) -> None:
        """Write the manifest into a secondary store (before the record lists the store).
        An s3 store first makes the data durable in its object store (engine/objstore)."""
        store = self.get(name)
        tier = getattr(store, "tier", None)
        if tier is not None:
            await tier.commit(ingested, image_id)
            return
        await store.index.writer.run(lambda txn: ingested.commit(txn, image_id))

    async def release(self, name: str, image_id: str) -> None:
        store = self.get(name)
        await store.index.writer.run(lambda txn: store.release(txn, image_id))

    def details(self) -> list[dict]:
        out = []
        for sc in self.configs:
            if sc.type == "http":
                out.append({"config": sc, "path": None})
                continue
            path = self.cfg.data_dir if sc is self.configs[0] else store_path(self.cfg, sc)
            out.append({"config": sc, "path": str(path)})
        return out

    async def reconcile(self, catalog: Any) -> int:
        """Release manifests of secondary stores that no image record lists; returns how
        many were released."""
        released = 0
        for name, store in self._others.items():
            with store.index.read() as txn:
                heads = [bytes(k) for k, _ in txn.cursor(db=store.db.manifests)
                         if len(k) == 16]
            for key in heads:
                image_id = id_from_key(key)
                with catalog.index.read() as txn:
                    raw = txn.get(key, db=catalog.images)
                rec = None if raw is None else decode_image(raw)
                if rec is not None and rec.status != "deleted" and \
                        name in [self.canonical(s) for s in rec.stores]:
                    continue
                await self.release(name, image_id)
                released += 1
                log.info("released the orphaned copy of image %s in store %s", image_id, name)
        return released


def store_path(cfg: EngineConfig, sc: StoreConfig) -> Path:
    return Path(sc.path) if sc.path else cfg.data_dir / "stores" / sc.id
