# The metadata definitions catalog (Glance's metadefs): namespaces and what they hold --
# objects, properties, tags and resource-type associations -- plus the resource types, stored
# in LMDB through metadefs_store (docs/formats.md, "Metadata definitions").
# Invariants:
# - A namespace has a stable internal id under its (renameable) name; its contents hang off
#   the id, so a rename rewrites one record. Tag names are unique regardless of case.
# - Every write is one writer job (one LMDB transaction) that re-reads what it checks: a
#   namespace created with its contents appears whole or not at all.
# - Visibility is Glance's database rule (admin, unowned, public, or the caller's project);
#   a namespace the viewer may not see is "not found". Role policy is the HTTP layer's.
# - Request documents are validated (metadefs_rules) before anything is written; property
#   definitions are stored in their normal form.
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tessera.engine import metadefs_rules as rules
from tessera.engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from tessera.engine.index import Index
from tessera.engine.metadefs_store import MetadefsTables

SORT_KEYS = ("namespace", "display_name", "description", "visibility", "protected", "owner",
             "created_at", "updated_at")


@dataclass(frozen=True)
class Viewer:
    """Who is looking, as far as namespace visibility goes."""
    is_admin: bool
    project_id: str | None


ADMIN = Viewer(is_admin=True, project_id=None)


def visible(viewer: Viewer, ns: dict[str, Any]) -> bool:
    return (viewer.is_admin or ns.get("owner") is None or ns.get("visibility") == "public"
            or (viewer.project_id is not None and viewer.project_id == ns.get("owner")))


def ns_missing(name: str) -> NotFound:
    return NotFound(f"Metadata definition namespace={name} was not found.")


def _sort_value(value: Any) -> tuple[bool, Any]:
    return (value is not None, value if value is not None else 0)


class Metadefs:
    """The metadefs catalog in one Index. Reads are short read transactions; writes go
    through the index writer. Records are plain dicts (msgpack maps)."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._t = MetadefsTables(index)

    # -- transaction helpers ----------------------------------------------------------------
    def _visible_ns(self, txn: Any, viewer: Viewer, name: str) -> dict[str, Any]:
        ns = self._t.load_ns(txn, name) if isinstance(name, str) else None
        if ns is None or not visible(viewer, ns):
            raise ns_missing(name)
        return ns

    def _touch(self, txn: Any, ns: dict[str, Any], now: float) -> None:
        ns["updated_at"] = now
        self._t.put_ns(txn, ns)

    async def _write(self, fn: Any) -> Any:
        return await self.index.writer.run(fn)

    # -- namespaces: reads ------------------------------------------------------------------
    def get_namespace(self, viewer: Viewer, name: str) -> dict[str, Any]:
        with self.index.read() as txn:
            return self._visible_ns(txn, viewer, name)

    def namespace_detail(self, viewer: Viewer, name: str) -> dict[str, Any]:
        """The namespace with its associations, properties, objects and tags."""
        with self.index.read() as txn:
            ns = self._visible_ns(txn, viewer, name)
            return self._detail(txn, ns)

    def _detail(self, txn: Any, ns: dict[str, Any]) -> dict[str, Any]:
        out = dict(ns)
        out["resource_type_associations"] = self._t.items_of(txn, ns["id"], "association")
        out["properties"] = {p["name"]: p["schema"] for p in self._t.items_of(txn, ns["id"],
                                                                             "property")}
        out["objects"] = self._t.items_of(txn, ns["id"], "object")
        out["tags"] = self._t.items_of(txn, ns["id"], "tag")
        return out

    def list_namespaces(self, viewer: Viewer, *, visibility: str | None = None,
                        resource_types: list[str] | None = None, sort_key: str = "created_at",
                        sort_dir: str = "desc", marker: str | None = None,
                        limit: int | None = None) -> list[dict[str, Any]]:
        """Visible namespaces (each with `resource_type_associations`), sorted and paged as
        Glance does: by sort_key then created_at then id, after `marker` (a name)."""
        if sort_key not in SORT_KEYS:
            raise InvalidInput(f"Invalid sort key: {sort_key}")
        if sort_dir not in ("asc", "desc"):
            raise InvalidInput(f"Invalid sort direction: {sort_dir}")
        with self.index.read() as txn:
            rows = []
            for ns in self._t.all_ns(txn):
                if not visible(viewer, ns):
                    continue
                if visibility is not None and ns.get("visibility") != visibility:
                    continue
                ns["resource_type_associations"] = self._t.items_of(txn, ns["id"], "association")
                if resource_types is not None and not any(
                        a["name"] in resource_types for a in ns["resource_type_associations"]):
                    continue
                rows.append(ns)
            if marker is not None:
                marker_ns = self._visible_ns(txn, viewer, marker)
        rows.sort(key=lambda r: (_sort_value(r.get(sort_key)), r["created_at"], r["id"]),
                  reverse=sort_dir == "desc")
        if marker is not None:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(marker_ns["id"]) + 1:] if marker_ns["id"] in ids else []
        return rows if limit is None else rows[:limit]

    # -- namespaces: writes -----------------------------------------------------------------
    async def create_namespace(self, doc: dict[str, Any], *,
                               owner: str | None) -> dict[str, Any]:
        """A namespace with the contents its document carries, all in one transaction."""
        rules.validate("namespace", doc)
        now = time.time()
        ns = rules.new_namespace_record(doc, owner=doc.get("owner", owner), now=now)

        def create(txn: Any) -> dict[str, Any]:
            if self._t.load_ns(txn, ns["namespace"]) is not None:
                raise Conflict(f"The metadata definition namespace={ns['namespace']} "
                               "already exists.")
            self._t.put_ns(txn, ns)
            self._write_contents(txn, ns, doc, now)
            return self._detail(txn, ns)

        return await self._write(create)

    def _write_contents(self, txn: Any, ns: dict[str, Any], doc: dict[str, Any],
                        now: float) -> None:
        name = ns["namespace"]
        for assoc in doc.get("resource_type_associations") or ():
            self._add_association(txn, ns, assoc, now)
        for obj in doc.get("objects") or ():
            if self._t.get_item(txn, ns["id"], "object", obj["name"]) is not None:
                raise Conflict(f"A metadata definition object with name={obj['name']} "
                               f"already exists in namespace={name}.")
            self._t.put_item(txn, ns["id"], "object", rules.object_record(obj, now))
        for prop_name, prop in (doc.get("properties") or {}).items():
            self._t.put_item(txn, ns["id"], "property", {
                "name": prop_name, "schema": rules.normal_property(prop)})
        for tag in doc.get("tags") or ():
            self._add_tag(txn, ns, tag["name"], now)

    async def update_namespace(self, viewer: Viewer, name: str, doc: dict[str, Any], *,
                               owner: str | None) -> dict[str, Any]:
        """Glance's PUT: every base field is replaced (absent ones take their defaults)."""
        rules.validate("namespace", doc)
        now = time.time()

        def update(txn: Any) -> dict[str, Any]:
            ns = self._visible_ns(txn, viewer, name)
            new_name = doc["namespace"]
            if new_name != name and self._t.load_ns(txn, new_name) is not None:
                raise Conflict("Invalid update. It would result in a duplicate metadata "
                               f"definition namespace with the same name of {new_name}")
            new = {**ns, "namespace": new_name, "display_name": doc.get("display_name"),
                   "description": doc.get("description"),
                   "visibility": doc.get("visibility") or "private",
                   "protected": bool(doc.get("protected") or False),
                   "owner": doc.get("owner") or owner, "updated_at": now}
            if new_name != name:
                self._t.delete_ns(txn, name)
            self._t.put_ns(txn, new)
            return new

        return await self._write(update)

    async def delete_namespace(self, viewer: Viewer, name: str) -> None:
        def delete(txn: Any) -> None:
            ns = self._visible_ns(txn, viewer, name)
            self._refuse_protected(ns)
            self._t.drop_all(txn, ns["id"])
            self._t.delete_ns(txn, name)

        await self._write(delete)

    async def delete_contents(self, viewer: Viewer, name: str, kind: str) -> None:
        """Delete every object, property or tag of a namespace (kind: object|property|tag)."""
        now = time.time()

        def delete(txn: Any) -> None:
            ns = self._visible_ns(txn, viewer, name)
            self._refuse_protected(ns)
            self._t.drop_all(txn, ns["id"], kind)
            self._touch(txn, ns, now)

        await self._write(delete)

    @staticmethod
    def _refuse_protected(ns: dict[str, Any], what: str = "", item: str = "") -> None:
        if not ns.get("protected"):
            return
        if not what:
            raise Forbidden(f"Metadata definition namespace {ns['namespace']} is protected "
                            "and cannot be deleted.")
        raise Forbidden(f"Metadata definition {what} {item} is protected and cannot be "
                        "deleted.")

    # -- objects ----------------------------------------------------------------------------
    def list_objects(self, viewer: Viewer, ns_name: str) -> list[dict[str, Any]]:
        return self._list(viewer, ns_name, "object")

    def get_object(self, viewer: Viewer, ns_name: str, name: str) -> dict[str, Any]:
        return self._get(viewer, ns_name, "object", name)

    async def create_object(self, viewer: Viewer, ns_name: str,
                            doc: dict[str, Any]) -> dict[str, Any]:
        rules.validate("object", doc)
        now = time.time()

        def create(txn: Any) -> dict[str, Any]:
            ns = self._visible_ns(txn, viewer, ns_name)
            if self._t.get_item(txn, ns["id"], "object", doc["name"]) is not None:
                raise Conflict(f"A metadata definition object with name={doc['name']} "
                               f"already exists in namespace={ns_name}.")
            rec = rules.object_record(doc, now)
            self._t.put_item(txn, ns["id"], "object", rec)
            return rec

        return await self._write(create)

    async def update_object(self, viewer: Viewer, ns_name: str, name: str,
                            doc: dict[str, Any]) -> dict[str, Any]:
        rules.validate("object", doc)
        now = time.time()

        def update(txn: Any) -> dict[str, Any]:
            ns = self._visible_ns(txn, viewer, ns_name)
            old = self._require(txn, ns, "object", name)
            if doc["name"] != name and \
                    self._t.get_item(txn, ns["id"], "object", doc["name"]) is not None:
                raise Conflict(f"A metadata definition object with name={doc['name']} "
                               f"already exists in namespace={ns_name}.")
            rec = rules.object_record(doc, now, created_at=old["created_at"])
            self._t.drop_item(txn, ns["id"], "object", name)
            self._t.put_item(txn, ns["id"], "object", rec)
            return rec

        return await self._write(update)

    async def delete_object(self, viewer: Viewer, ns_name: str, name: str) -> None:
        await self._delete(viewer, ns_name, "object", name)

    # -- properties -------------------------------------------------------------------------
    def list_properties(self, viewer: Viewer, ns_name: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p["schema"] for p in self._list(viewer, ns_name, "property")}

    def get_property(self, viewer: Viewer, ns_name: str, name: str) -> dict[str, Any]:
        rec = self._get(viewer, ns_name, "property", name)
        return {"name": rec["name"], **rec["schema"]}

    async def create_property(self, viewer: Viewer, ns_name: str,
                              doc: dict[str, Any]) -> dict[str, Any]:
        rules.validate("property", doc)

        def create(txn: Any) -> dict[str, Any]:
            ns = self._visible_ns(txn, viewer, ns_name)
            if self._t.get_item(txn, ns["id"], "property", doc["name"]) is not None:
                raise Conflict(f"A metadata definition property with name={doc['name']} "
                               f"already exists in namespace={ns_name}.")
            rec = {"name": doc["name"], "schema": rules.normal_property(doc)}
            self._t.put_item(txn, ns["id"], "property", rec)
            return {"name": rec["name"], **rec["schema"]}

        return await self._write(create)

    async def update_property(self, viewer: Viewer, ns_name: str, name: str,
                              doc: dict[str, Any]) -> dict[str, Any]:
        rules.validate("property", doc)

        def update(txn: Any) -> dict[str, Any]:
            ns = self._visible_ns(txn, viewer, ns_name)
            self._require(txn, ns, "property", name)
            if doc["name"] != name and \
                    self._t.get_item(txn, ns["id"], "property", doc["name"]) is not None:
                raise Conflict(f"A metadata definition property with name={doc['name']} "
                               f"already exists in namespace={ns_name}.")
            rec = {"name": doc["name"], "schema": rules.normal_property(doc)}
            self._t.drop_item(txn, ns["id"], "property", name)
            self._t.put_item(txn, ns["id"], "property", rec)
            return {"name": rec["name"], **rec["schema"]}

        return await self._write(update)

    async def delete_property(self, viewer: Viewer, ns_name: str, name: str) -> None:
        await self._delete(viewer, ns_name, "property", name)

    # -- tags -------------------------------------------------------------------------------
    def list_tags(self, viewer: Viewer, ns_name: str) -> list[dict[str, Any]]:
        return self._list(viewer, ns_name, "tag")

    def get_tag(self, viewer: Viewer, ns_name: str, name: str) -> dict[str, Any]:
        return self._get(viewer, ns_name, "tag", name)

    def _add_tag(self, txn: Any, ns: dict[str, Any], name: str, now: float) -> dict[str, Any]:
        if self._t.get_item(txn, ns["id"], "tag", name) is not None:
            raise Conflict(f"A metadata tag with name={name} already exists in "
                           f"namespace={ns['namespace']}. (Please note that metadata tag "
                           "names are case insensitive).")
        rec = {"name": name, "created_at": now, "updated_at": now}
        self._t.put_item(txn, ns["id"], "tag", rec)
        return rec

    async def create_tag(self, viewer: Viewer, ns_name: str, name: str) -> dict[str, Any]:
        rules.validate("tag", {"name": name})
        now = time.time()

        def create(txn: Any) -> dict[str, Any]:
            return self._add_tag(txn, self._visible_ns(txn, viewer, ns_name), name, now)

        return await self._write(create)

    async def create_tags(self, viewer: Viewer, ns_name: str, names: list[str], *,
                          append: bool) -> list[dict[str, Any]]:
        """Several tags at once: they replace the namespace's tags unless `append`."""
        for name in names:
            rules.validate("tag", {"name": name})
        now = time.time()

        def create(txn: Any) -> list[dict[str, Any]]:
            ns = self._visible_ns(txn, viewer, ns_name)
            if names and not append:
                self._t.drop_all(txn, ns["id"], "tag")
            return [self._add_tag(txn, ns, name, now) for name in names]

        return await self._write(create)

    async def update_tag(self, viewer: Viewer, ns_name: str, name: str,
                         doc: dict[str, Any]) -> dict[str, Any]:
        rules.validate("tag", doc)
        now = time.time()

        def update(txn: Any) -> dict[str, Any]:
            ns = self._visible_ns(txn, viewer, ns_name)
            old = self._require(txn, ns, "tag", name)
            self._t.drop_item(txn, ns["id"], "tag", name)
            rec = self._add_tag(txn, ns, doc["name"], now)
            rec["created_at"] = old["created_at"]
            self._t.put_item(txn, ns["id"], "tag", rec)
            return rec

        return await self._write(update)

    async def delete_tag(self, viewer: Viewer, ns_name: str, name: str) -> None:
        await self._delete(viewer, ns_name, "tag", name)

    # -- resource types and associations ----------------------------------------------------
    def list_resource_types(self) -> list[dict[str, Any]]:
        with self.index.read() as txn:
            return self._t.all_rtypes(txn)

    def list_associations(self, viewer: Viewer, ns_name: str) -> list[dict[str, Any]]:
        return self._list(viewer, ns_name, "association")

    def _add_association(self, txn: Any, ns: dict[str, Any], doc: dict[str, Any],
                         now: float) -> dict[str, Any]:
        if self._t.get_item(txn, ns["id"], "association", doc["name"]) is not None:
            raise Conflict("The metadata definition resource-type association of "
                           f"resource-type={doc['name']} to namespace={ns['namespace']} "
                           "already exists.")
        self._t.ensure_rtype(txn, doc["name"], now)
        rec = {"name": doc["name"], "prefix": doc.get("prefix"),
               "properties_target": doc.get("properties_target"),
               "created_at": now, "updated_at": now}
        self._t.put_item(txn, ns["id"], "association", rec)
        return rec

    async def create_association(self, viewer: Viewer, ns_name: str,
                                 doc: dict[str, Any]) -> dict[str, Any]:
        rules.validate("resource_type", doc)
        now = time.time()

        def create(txn: Any) -> dict[str, Any]:
            return self._add_association(txn, self._visible_ns(txn, viewer, ns_name), doc, now)

        return await self._write(create)

    async def delete_association(self, viewer: Viewer, ns_name: str, rtype: str) -> None:
        def delete(txn: Any) -> None:
            ns = self._visible_ns(txn, viewer, ns_name)
            if not self._t.has_rtype(txn, rtype):
                raise NotFound(f"The metadata definition resource-type with name={rtype}, "
                               "was not found.")
            if self._t.get_item(txn, ns["id"], "association", rtype) is None:
                raise NotFound("The metadata definition resource-type association of "
                               f"resource-type={rtype} to namespace={ns_name}, was not found.")
            self._refuse_protected(ns, "resource-type-association", rtype)
            self._t.drop_item(txn, ns["id"], "association", rtype)

        await self._write(delete)

    # -- shared item plumbing ---------------------------------------------------------------
    _MISSING = {"object": "The metadata definition object with name={name} was not found in "
                          "namespace={ns}.",
                "property": "The metadata definition property with name={name} was not found "
                            "in namespace={ns}.",
                "tag": "The metadata definition tag with name={name} was not found in "
                       "namespace={ns}."}

    def _require(self, txn: Any, ns: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
        rec = self._t.get_item(txn, ns["id"], kind, name)
        if rec is None:
            raise NotFound(self._MISSING[kind].format(name=name, ns=ns["namespace"]))
        return rec

    def _list(self, viewer: Viewer, ns_name: str, kind: str) -> list[dict[str, Any]]:
        with self.index.read() as txn:
            ns = self._visible_ns(txn, viewer, ns_name)
            return self._t.items_of(txn, ns["id"], kind)

    def _get(self, viewer: Viewer, ns_name: str, kind: str, name: str) -> dict[str, Any]:
        with self.index.read() as txn:
            ns = self._visible_ns(txn, viewer, ns_name)
            return self._require(txn, ns, kind, name)

    async def _delete(self, viewer: Viewer, ns_name: str, kind: str, name: str) -> None:
        def delete(txn: Any) -> None:
            ns = self._visible_ns(txn, viewer, ns_name)
            self._require(txn, ns, kind, name)
            self._refuse_protected(ns, kind, name)
            self._t.drop_item(txn, ns["id"], kind, name)

        await self._write(delete)

    # -- whole documents (tessera metadefs load/export) -------------------------------------
    def export_documents(self) -> list[dict[str, Any]]:
        """Every namespace as a document in Glance's metadefs file format, by name."""
        with self.index.read() as txn:
            return [rules.document_of(self._detail(txn, ns)) for ns in self._t.all_ns(txn)]

    async def load_document(self, doc: dict[str, Any]) -> str:
        """Create or replace one namespace from a file document; "created", "replaced" or
        "unchanged" (loading the same document twice changes nothing)."""
        if not isinstance(doc, dict):
            raise InvalidInput("a metadefs namespace document must be a JSON object")
        doc = {"visibility": "public", "protected": True, **doc}
        rules.validate("namespace", doc)
        wanted = rules.document_of(rules.detail_of_document(doc))
        now = time.time()

        def load(txn: Any) -> str:
            old = self._t.load_ns(txn, doc["namespace"])
            if old is not None and rules.document_of(self._detail(txn, old)) == wanted:
                return "unchanged"
            ns = rules.new_namespace_record(doc, owner=doc.get("owner"), now=now)
            if old is not None:
                ns["id"], ns["created_at"] = old["id"], old["created_at"]
                self._t.drop_all(txn, old["id"])
            self._t.put_ns(txn, ns)
            self._write_contents(txn, ns, doc, now)
            return "created" if old is None else "replaced"

        return await self._write(load)
