# The LMDB layout of the metadefs catalog (docs/formats.md, "Metadata definitions"): the
# three databases md_namespaces, md_items and md_rtypes, their keys, and the record-level
# reads and writes inside a caller's transaction.
# Invariants: the only module that builds metadefs keys or touches those databases; items of
# a namespace are keyed `<namespace id>/<kind>/<name>` (tags by lower-cased name), so a
# namespace's contents, and each kind of them, are one prefix range; values are msgpack maps;
# a lookup by a name no record can have (empty, too long for a key, not encodable) finds
# nothing instead of failing.
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tessera.engine.index import Index, pack, unpack

KINDS = {"object": "o", "property": "p", "tag": "t", "association": "r"}


def _item_name(kind: str, name: str) -> str:
    return name.lower() if kind == "tag" else name


MAX_KEY = 511      # LMDB's default key size limit


def _key(text: str) -> bytes | None:
    """The key bytes of a name, or None when no stored record can have it (names are
    validated before they are written; a lookup by an odd name simply finds nothing)."""
    try:
        key = text.encode()
    except UnicodeEncodeError:
        return None
    return key if 0 < len(key) <= MAX_KEY else None


def item_key(ns_id: str, kind: str, name: str) -> bytes | None:
    return _key(f"{ns_id}/{KINDS[kind]}/{_item_name(kind, name)}")


def prefix(ns_id: str, kind: str | None = None) -> bytes:
    return f"{ns_id}/".encode() if kind is None else f"{ns_id}/{KINDS[kind]}/".encode()


class MetadefsTables:
    """Record access for one Index; every method runs in the caller's transaction."""

    def __init__(self, index: Index) -> None:
        self._ns = index.db("md_namespaces")
        self._items = index.db("md_items")
        self._rtypes = index.db("md_rtypes")

    # namespaces
    def load_ns(self, txn: Any, name: str) -> dict[str, Any] | None:
        key = _key(name)
        raw = None if key is None else txn.get(key, db=self._ns)
        return None if raw is None else unpack(raw)

    def put_ns(self, txn: Any, ns: dict[str, Any]) -> None:
        txn.put(ns["namespace"].encode(), pack(ns), db=self._ns)

    def delete_ns(self, txn: Any, name: str) -> None:
        txn.delete(name.encode(), db=self._ns)

    def all_ns(self, txn: Any) -> Iterator[dict[str, Any]]:
        for _, raw in txn.cursor(db=self._ns):
            yield unpack(raw)

    # items
    def items_of(self, txn: Any, ns_id: str, kind: str) -> list[dict[str, Any]]:
        """A namespace's items of one kind, by name."""
        start = prefix(ns_id, kind)
        out = []
        cur = txn.cursor(db=self._items)
        if cur.set_range(start):
            for key, raw in cur:
                if not key.startswith(start):
                    break
                out.append(unpack(raw))
        out.sort(key=lambda r: r["name"])
        return out

    def get_item(self, txn: Any, ns_id: str, kind: str, name: str) -> dict[str, Any] | None:
        key = item_key(ns_id, kind, name)
        raw = None if key is None else txn.get(key, db=self._items)
        return None if raw is None else unpack(raw)

    def put_item(self, txn: Any, ns_id: str, kind: str, rec: dict[str, Any]) -> None:
        key = item_key(ns_id, kind, rec["name"])
        if key is None:        # names are validated first; this is a bug, not a request
            raise ValueError(f"metadefs name {rec['name']!r} cannot be a key")
        txn.put(key, pack(rec), db=self._items)

    def drop_item(self, txn: Any, ns_id: str, kind: str, name: str) -> None:
        key = item_key(ns_id, kind, name)
        if key is not None:
            txn.delete(key, db=self._items)

    def drop_all(self, txn: Any, ns_id: str, kind: str | None = None) -> None:
        """Every item of a namespace (of one kind, or all kinds)."""
        start = prefix(ns_id, kind)
        cur = txn.cursor(db=self._items)
        keys = []
        if cur.set_range(start):
            for key in cur.iternext(keys=True, values=False):
                if not key.startswith(start):
                    break
                keys.append(key)
        for key in keys:
            txn.delete(key, db=self._items)

    # resource types
    def has_rtype(self, txn: Any, name: str) -> bool:
        key = _key(name)
        return key is not None and txn.get(key, db=self._rtypes) is not None

    def ensure_rtype(self, txn: Any, name: str, now: float) -> None:
        if not self.has_rtype(txn, name):
            txn.put(name.encode(), pack({"name": name, "created_at": now, "updated_at": now}),
                    db=self._rtypes)

    def all_rtypes(self, txn: Any) -> list[dict[str, Any]]:
        return [unpack(raw) for _, raw in txn.cursor(db=self._rtypes)]
