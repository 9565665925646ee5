# The node's configuration: a TOML file, then command-line flags, into frozen dataclasses.
# Invariants: built once in the composition root (cli.py) and passed down; nothing reads the
# environment or a global; unknown keys are errors, never silently ignored.
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from tessera.engine.config import EngineConfig
from tessera.engine.errors import InvalidInput
from tessera.engine.stores import StoreConfig, check_configs
from tessera.http.config import MAX_WORKERS, ServerConfig
from tessera.http.webdownload import ImportConfig
from tessera.logs import FORMATS, LEVELS, LogConfig

DEFAULT_DATA_DIR = Path("./tessera-data")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class NodeAddress:
    """One member of the cluster: its id, public API address and private peer address."""
    id: str
    api: str
    peer: str


@dataclass(frozen=True)
class ClusterConfig:
    """The `[cluster]` table: the peer listener, the shared key, R and W, and the static
    node list (this node included)."""
    node_id: str
    bind: str
    key_file: Path
    nodes: tuple[NodeAddress, ...]
    replicas: int = 3
    write_quorum: int = 2
    # anti-entropy: seconds between rounds and the repair rate limit (bytes per second)
    anti_entropy_interval: float = 10.0
    repair_rate: int = 64 * 1024 * 1024
    # integrity auditor: bytes per second rehashed (Swift's object auditor default 10 MB/s)
    audit_rate: int = 10 * 1000 * 1000
    # peer authentication: largest accepted clock skew (seconds)
    max_skew: float = 30.0
    # tombstones (deleted image records) are kept at least this long, and until every peer
    # has them, before they are reclaimed (docs/replication-protocol.md, "Tombstones")
    tombstone_grace: float = 7 * 86400.0
    # hinted handoff: most writes queued (persisted) per unreachable peer
    max_hints: int = 100_000

    @property
    def peers(self) -> tuple[NodeAddress, ...]:
        return tuple(n for n in self.nodes if n.id != self.node_id)

    def node(self, node_id: str) -> NodeAddress:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def read_key(self) -> bytes:
        try:
            key = bytes.fromhex(self.key_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read cluster key {self.key_file}: {exc}") from exc
        if len(key) < 32:
            raise ConfigError(f"cluster key {self.key_file} is shorter than 32 bytes")
        return key


@dataclass(frozen=True)
class Config:
    engine: EngineConfig
    server: ServerConfig
    cluster: ClusterConfig | None = None
    imports: ImportConfig = ImportConfig()   # the [import] table (methods, web-download filter)
    log: LogConfig = field(default_factory=LogConfig)


# Keys whose values are one of a fixed set, checked before a dataclass sees them.
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("api", "auth"): ("noauth", "trusted-headers", "tokens"),
    ("api", "metrics"): ("auto", "public", "admin", "off"),
    ("log", "format"): FORMATS,
    ("log", "level"): LEVELS,
}
_TOML_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
               "Path": (str,)}


def _check_type(where: str, key: str, annotation: str, value: Any) -> None:
    """Values must have the field's type (TOML has no null: an optional key is omitted)."""
    allowed: tuple[type, ...] = ()
    for part in str(annotation).split("|"):
        allowed += _TOML_TYPES.get(part.strip(), ())
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if allowed and not ok:
        names = " or ".join(p.strip() for p in str(annotation).split("|")
                            if p.strip() != "None")
        raise ConfigError(f"[{where}] {key} must be {names}, got {value!r}")
    choices = CHOICES.get((where, key))
    if choices is not None and value not in choices:
        raise ConfigError(f"[{where}] {key} must be one of {', '.join(choices)}, got {value!r}")


def _take(cls: type, table: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(unknown)}")
    for key, value in table.items():
        _check_type(where, key, known[key], value)
    return dict(table)


def load(path: Path | None = None, *, data_dir: str | None = None,
         bind: str | None = None, log_format: str | None = None,
         env: Mapping[str, str] | None = None, workers: int | None = None) -> Config:
    """Build the configuration: embedded defaults, then the TOML file, then flags. `env` (the
    process environment, passed by the composition root) supplies only the credentials of
    s3 stores that name no credentials_file."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    unknown = sorted(set(raw) - {"node", "engine", "api", "log", "cluster", "import",
                                 "stores"})
    if unknown:
        raise ConfigError(f"unknown table(s): {', '.join(unknown)}")
    node = raw.get("node", {})
    extra = sorted(set(node) - {"id", "data_dir"})
    if extra:
        raise ConfigError(f"unknown key(s) in [node]: {', '.join(extra)}")
    for key, value in node.items():
        _check_type("node", key, "str", value)
    eng = _take(EngineConfig, raw.get("engine", {}), "engine")
    eng.pop("data_dir", None)
    if "stores" in eng:
        raise ConfigError("stores are [[stores]] tables, not a key of [engine]")
    engine = EngineConfig(data_dir=Path(data_dir or node.get("data_dir") or DEFAULT_DATA_DIR),
                          node_id=node.get("id", "local"),
                          stores=store_configs(raw, env or {}), **eng)
    api = dict(raw.get("api", {}))
    api_bind = bind or api.pop("bind", None)
    if workers is not None:
        api["workers"] = workers
    server = ServerConfig(**_take(ServerConfig, api, "api"))
    if not 1 <= server.workers <= MAX_WORKERS:
        raise ConfigError(f"[api] workers must be 1 to {MAX_WORKERS}, got {server.workers}")
    if api_bind:
        host, _, port = api_bind.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"bind must be HOST:PORT, got {api_bind!r}")
        server = replace(server, host=host.strip("[]"), port=int(port))
    log_table = _take(LogConfig, raw.get("log", {}), "log")
    if log_format is not None:
        _check_type("log", "format", "str", log_format)
        log_table["format"] = log_format
    cluster = None
    if "cluster" in raw:       # a single node has no [cluster] table
        base = Path(path).parent if path is not None else Path(".")
        cluster = cluster_config(raw["cluster"], engine.node_id, base)
    return Config(engine=engine, server=server, log=LogConfig(**log_table), cluster=cluster,
                  imports=import_config(raw.get("import", {})))


# Store credentials never come from the file (it is rendered and shared); see store_configs.
SECRET_STORE_KEYS = ("access_key", "secret_key", "session_token")
ENV_CREDENTIALS = (("access_key", "AWS_ACCESS_KEY_ID"), ("secret_key", "AWS_SECRET_ACCESS_KEY"),
                   ("session_token", "AWS_SESSION_TOKEN"))


def store_configs(raw: dict[str, Any], env: Mapping[str, str] | None = None,
                  ) -> tuple[StoreConfig, ...]:
    """The [[stores]] tables (engine/stores.py): id, type ("local", "s3" or the read-only
    "http"), description, default, path, weight, and for s3 endpoint, bucket, region,
    prefix, credentials_file; the default store is the data directory itself. An s3 store
    without a credentials_file takes its keys from `env` (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)."""
    env = env or {}
    tables = raw.get("stores", [])
    if not isinstance(tables, list):
        raise ConfigError("stores must be an array of tables: [[stores]]")
    out = []
    for i, table in enumerate(tables):
        if not isinstance(table, dict) or "id" not in table:
            raise ConfigError(f"[[stores]] #{i + 1} needs an id")
        secret = sorted(set(table) & set(SECRET_STORE_KEYS))
        if secret:
            raise ConfigError(f"[[stores]] {table['id']}: {', '.join(secret)} cannot be set in "
                              "the file; use credentials_file or the environment "
                              "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
        values = _take(StoreConfig, table, "stores")
        if values.get("type") == "s3" and not values.get("credentials_file"):
            values.update({k: env[name] for k, name in ENV_CREDENTIALS if env.get(name)})
        out.append(StoreConfig(**values))
    try:
        return check_configs(tuple(out))
    except InvalidInput as exc:
        raise ConfigError(exc.message) from None


def import_config(table: dict[str, Any]) -> ImportConfig:
    """The [import] table: lists become tuples (the dataclass is frozen and hashable)."""
    imp = _take(ImportConfig, table, "import")
    return ImportConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in imp.items()})


def render(cfg: Config) -> str:
    """The effective configuration as a TOML file `load` accepts (unset options commented)."""
    eng = {f.name: getattr(cfg.engine, f.name) for f in fields(cfg.engine)}
    node = {"id": eng.pop("node_id"), "data_dir": str(eng.pop("data_dir"))}
    stores = eng.pop("stores")
    api = {f.name: getattr(cfg.server, f.name) for f in fields(cfg.server)}
    host, port = api.pop("host"), api.pop("port")
    api = {"bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}", **api}
    log = {f.name: getattr(cfg.log, f.name) for f in fields(cfg.log)}
    out: list[str] = []
    for name, table in (("node", node), ("engine", eng), ("api", api), ("log", log)):
        out.append(f"[{name}]")
        for key, value in table.items():
            out.append(f"# {key} = (unset)" if value is None else f"{key} = {_toml(value)}")
        out.append("")
    imports = {f.name: getattr(cfg.imports, f.name) for f in fields(cfg.imports)}
    tables: list[tuple[str, Any]] = [("[import]", imports)]
    if cfg.cluster is not None:
        cl = {f.name: getattr(cfg.cluster, f.name) for f in fields(cfg.cluster)}
        cl.pop("node_id")                       # it is [node] id
        nodes = cl.pop("nodes")
        cl["key_file"] = str(cl["key_file"])
        tables += [("[cluster]", cl)]
        tables += [("[[cluster.nodes]]", {"id": n.id, "api": n.api, "peer": n.peer})
                   for n in nodes]
    tables += [("[[stores]]", {f.name: getattr(sc, f.name) for f in fields(sc)
                               if f.name not in SECRET_STORE_KEYS})
               for sc in stores]
    for head, table in tables:
        out.append(head)
        for key, value in table.items():
            out.append(f"# {key} = (unset)" if value is None else f"{key} = {_toml(value)}")
        out.append("")
    return "\n".join(out)


def _toml(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _hostport(value: Any, where: str) -> str:
    host, _, port = str(value).rpartition(":")
    if not isinstance(value, str) or not host or not port.isdigit():
        raise ConfigError(f"{where} must be HOST:PORT, got {value!r}")
    return value


def cluster_config(table: dict[str, Any], node_id: str, base: Path) -> ClusterConfig:
    """The [cluster] table and its [[cluster.nodes]]; a relative key_file is relative to the
    directory of the config file."""
    table = dict(table)
    raw_nodes = table.pop("nodes", [])
    for key in ("bind", "key_file"):
        if key not in table:
            raise ConfigError(f"[cluster] needs {key}")
    key_file = Path(str(table.pop("key_file")))
    bind = _hostport(table.pop("bind"), "[cluster] bind")
    settings = _take(ClusterConfig, table, "cluster")
    for key in ("node_id", "nodes"):
        if key in settings:
            raise ConfigError(f"unknown key(s) in [cluster]: {key}")
    nodes = []
    for i, n in enumerate(raw_nodes):
        if not isinstance(n, dict) or set(n) != {"id", "api", "peer"}:
            raise ConfigError(f"[[cluster.nodes]] #{i + 1} needs exactly id, api and peer")
        nodes.append(NodeAddress(str(n["id"]), _hostport(n["api"], "[[cluster.nodes]] api"),
                                 _hostport(n["peer"], "[[cluster.nodes]] peer")))
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ConfigError("[[cluster.nodes]] ids must be unique")
    if node_id not in ids:
        raise ConfigError(f"this node ([node] id = {node_id!r}) is not in [[cluster.nodes]]")
    if not key_file.is_absolute():
        key_file = base / key_file
    cfg = ClusterConfig(node_id=node_id, bind=bind, key_file=key_file, nodes=tuple(nodes),
                        **settings)
    if cfg.replicas < 1 or not 1 <= cfg.write_quorum <= cfg.replicas:
        raise ConfigError("[cluster] needs 1 <= write_quorum <= replicas")
    return cfg
