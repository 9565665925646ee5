# Metadefs namespace files: a directory of `*.json` documents in Glance's metadefs file format
# (one namespace per file, as `glance-manage db load_metadefs` reads them), loaded into and
# exported from the catalog; and the starter namespaces tessera ships (engine/metadefs_data).
# Invariants: a directory is read and validated whole before anything is written (one bad
# file loads nothing); loading is idempotent (an unchanged document is left alone, a changed
# one replaces its namespace); export writes one file per namespace whose content loads back
# to the same catalog.
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tessera.engine import metadefs_rules as rules
from tessera.engine.errors import InvalidInput
from tessera.engine.metadefs import Metadefs

STARTER_DIR = Path(__file__).resolve().parent / "metadefs_data"
# Glance's loader defaults (public, protected); a document without an owner stays unowned
# (Glance's loader writes owner "admin" only because its column cannot be null), so an
# export loads back to the same catalog.
FILE_DEFAULTS = {"visibility": "public", "protected": True}


def read_directory(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every `*.json` document in `path` (sorted by file name), each checked against the
    namespace schema; InvalidInput names the file at fault."""
    if not path.is_dir():
        raise InvalidInput(f"{path} is not a directory")
    docs = []
    seen: dict[str, Path] = {}
    for file in sorted(path.glob("*.json")):
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"{file}: not a readable JSON document ({exc})") from None
        if not isinstance(doc, dict):
            raise InvalidInput(f"{file}: a namespace document must be a JSON object")
        try:
            rules.validate("namespace", {**FILE_DEFAULTS, **doc})
        except InvalidInput as exc:
            raise InvalidInput(f"{file}: {exc.message}") from None
        name = doc["namespace"]
        if name in seen:
            raise InvalidInput(f"{file}: namespace {name} is also defined in {seen[name]}")
        seen[name] = file
        docs.append((file, doc))
    return docs


async def load_directory(metadefs: Metadefs, path: Path) -> dict[str, list[str]]:
    """Load every document of `path`; the namespaces by outcome (created/replaced/unchanged)."""
    outcome: dict[str, list[str]] = {"created": [], "replaced": [], "unchanged": []}
    for _, doc in read_directory(path):
        outcome[await metadefs.load_document({**FILE_DEFAULTS, **doc})].append(
            doc["namespace"])
    return outcome


def file_name(namespace: str) -> str:
    """A portable file name for a namespace: OS::Compute::Libvirt -> OS-Compute-Libvirt.json."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", namespace.replace("::", "-")).strip("-.")
    return (stem or "namespace") + ".json"


def export_directory(metadefs: Metadefs, path: Path) -> list[Path]:
    """Write every namespace to `path` (created if needed); the files written."""
    path.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    for doc in metadefs.export_documents():
        name = file_name(doc["namespace"])
        n = 1
        while name.lower() in used:
            n += 1
            name = file_name(doc["namespace"])[:-5] + f"-{n}.json"
        used.add(name.lower())
        target = path / name
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(target)
        written.append(target)
    return written


def _with_catalog(cfg: Any, fn: Any) -> Any:
    """Run `fn(metadefs)` (a coroutine function) on the index of `cfg`'s data directory only:
    no chunk store is opened, so this is safe beside a running node (LMDB serialises the
    writers of both processes)."""
    import trio

    from tessera.engine.chunkstore import open_index

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    index = open_index(cfg)
    try:
        return trio.run(fn, Metadefs(index))
    finally:
        index.close()


def run_load(cfg: Any, path: Path | None) -> dict[str, list[str]]:
    """`tessera metadefs load [DIR]`: DIR's namespaces, or the starter set without DIR."""
    source = path if path is not None else STARTER_DIR
    read_directory(source)            # refuse a bad directory before opening the store

    async def load(metadefs: Metadefs) -> dict[str, list[str]]:
        return await load_directory(metadefs, source)

    return _with_catalog(cfg, load)


def run_export(cfg: Any, path: Path) -> list[Path]:
    """`tessera metadefs export DIR`."""
    async def export(metadefs: Metadefs) -> list[Path]:
        return export_directory(metadefs, path)

    return _with_catalog(cfg, export)
