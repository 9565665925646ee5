# The rules on metadata definitions (metadefs): validation of request documents against the
# metadefs schemas (engine/metadefs_schemas.py), the extra sanity checks on property
# definitions, the normal form in which definitions are stored and shown, and the mapping
# between records and Glance's namespace file documents.
# Invariants: pure functions, no I/O; every refusal is InvalidInput with a message naming the
# schema, the failed rule and where in the document it failed ("Provided object does not
# match schema 'namespace': ..."), never a crash on odd JSON; a property definition is kept
# only with the keys Glance keeps (its PropertyType model), in Glance's order.
from __future__ import annotations

import re
import uuid
from typing import Any

from tessera.engine import metadefs_schemas
from tessera.engine.errors import InvalidInput

# Glance's PropertyType attributes, in the order its views list them.
PROPERTY_KEYS = ("type", "title", "description", "operators", "default", "readonly", "minimum",
                 "maximum", "enum", "pattern", "minLength", "maxLength", "confidential", "items",
                 "uniqueItems", "minItems", "maxItems", "additionalItems")
ITEM_KEYS = ("type", "enum")
READ_ONLY = ("self", "schema", "created_at", "updated_at")
NS_FIELDS = ("namespace", "display_name", "description", "visibility", "protected", "owner")

_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _where(path: tuple[Any, ...]) -> str:
    return "instance" + "".join(f"[{p!r}]" for p in path)


class _Failure(Exception):
    def __init__(self, message: str, path: tuple[Any, ...]) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def _resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["definitions"][name]
    return schema


def _check(root: dict[str, Any], schema: dict[str, Any], value: Any,
           path: tuple[Any, ...]) -> None:
    """A draft-4 subset: exactly the keywords the metadefs schemas use."""
    schema = _resolve(root, schema)
    for sub in schema.get("allOf", ()):
        _check(root, sub, value, path)
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_TYPES[k](value) for k in kinds):
            raise _Failure(f"{value!r} is not of type {kind!r}", path)
    if "enum" in schema and value not in schema["enum"]:
        raise _Failure(f"{value!r} is not one of {schema['enum']!r}", path)
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        raise _Failure(f"{value!r} is too long", path)
    if _TYPES["number"](value) and "minimum" in schema and value < schema["minimum"]:
        raise _Failure(f"{value!r} is less than the minimum of {schema['minimum']!r}", path)
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise _Failure(f"{value!r} should be non-empty", path)
        if schema.get("uniqueItems"):
            seen: list[Any] = []
            for item in value:
                if item in seen:
                    raise _Failure(f"{value!r} has non-unique elements", path)
                seen.append(item)
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                _check(root, schema["items"], item, (*path, i))
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                raise _Failure(f"{name!r} is a required property", path)
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        unexpected = [k for k in value if k not in props]
        if extra is False and unexpected:
            names = ", ".join(repr(k) for k in unexpected)
            verb = "was" if len(unexpected) == 1 else "were"
            raise _Failure(f"Additional properties are not allowed ({names} {verb} unexpected)",
                           path)
        for key, item in value.items():
            if key in props:
                _check(root, props[key], item, (*path, key))
            elif isinstance(extra, dict):
                _check(root, extra, item, (*path, key))


MAX_DEPTH = 32


def _check_text(value: Any, path: tuple[Any, ...]) -> None:
    """Every string (and key) must be storable: UTF-8 encodable (JSON allows lone
    surrogates, UTF-8 does not); nesting is bounded (a `default` may hold any JSON)."""
    if len(path) > MAX_DEPTH:
        raise _Failure(f"the document is nested more than {MAX_DEPTH} levels deep", path[:4])
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _Failure(f"{value!r} is not valid Unicode text", path) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, path)
            _check_text(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, (*path, i))


def _check_names(schema_name: str, doc: dict[str, Any]) -> None:
    """Names address records in URLs: they may not be empty."""
    def named(value: Any, path: tuple[Any, ...]) -> None:
        if isinstance(value, str) and not value:
            raise _Failure("'' is too short (a name may not be empty)", path)

    if schema_name == "namespace":
        named(doc.get("namespace"), ("namespace",))
        for key in ("objects", "tags", "resource_type_associations"):
            for i, item in enumerate(doc.get(key) or ()):
                named(item.get("name"), (key, i, "name"))
    elif "name" in doc:
        named(doc["name"], ("name",))


def validate(schema_name: str, doc: Any, *, require_name: bool = True) -> None:
    """Check `doc` against the metadefs schema `schema_name` (namespace, object, property,
    tag, resource_type); then check every property definition it carries."""
    root = metadefs_schemas.document(schema_name)
    if schema_name == "property" and not require_name:
        root["required"] = ["type", "title"]
    try:
        _check_text(doc, ())
        _check(root, root, doc, ())
        _check_names(schema_name, doc)
    except _Failure as exc:
        where = f" (in {_where(exc.path)})" if exc.path else ""
        raise InvalidInput(f"Provided object does not match schema '{schema_name}': "
                           f"{exc.message}{where}") from None
    if schema_name == "namespace":
        for name, prop in (doc.get("properties") or {}).items():
            check_property(name, prop, ("properties", name))
        for i, obj in enumerate(doc.get("objects") or ()):
            for name, prop in (obj.get("properties") or {}).items():
                check_property(name, prop, ("objects", i, "properties", name))
    elif schema_name == "object":
        for name, prop in (doc.get("properties") or {}).items():
            check_property(name, prop, ("properties", name))
    elif schema_name == "property":
        check_property(doc.get("name", "") if require_name else None, doc, ())


def check_property(name: str | None, prop: dict[str, Any], path: tuple[Any, ...]) -> None:
    """Sanity rules the JSON schema cannot say: a definition must be satisfiable. `name`
    None: a definition whose name lives elsewhere (not checked here)."""
    def bad(message: str) -> InvalidInput:
        where = f" (in {_where(path)})" if path else ""
        label = f" '{name}'" if name is not None else ""
        return InvalidInput(f"Invalid property definition{label}: {message}{where}")

    if name is not None and not name:
        raise bad("the property name is empty")
    if name is not None and len(name) > 80:
        raise bad("the property name is longer than 80 characters")
    kind = prop.get("type")
    pattern = prop.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise bad(f"pattern {pattern!r} is not a valid regular expression ({exc})") from None
    for low, high in (("minimum", "maximum"), ("minLength", "maxLength"),
                      ("minItems", "maxItems")):
        if isinstance(prop.get(low), (int, float)) and isinstance(prop.get(high), (int, float)) \
                and prop[low] > prop[high]:
            raise bad(f"{low} {prop[low]!r} is greater than {high} {prop[high]!r}")
    enum = prop.get("enum")
    if kind in _TYPES and kind not in ("array", "object") and isinstance(enum, list):
        for value in enum:
            if not _TYPES[kind](value):
                raise bad(f"enum value {value!r} is not of type {kind!r}")
    if "default" in prop and kind in _TYPES and not _TYPES[kind](prop["default"]):
        raise bad(f"default {prop['default']!r} is not of type {kind!r}")
    if "items" in prop and kind != "array":
        raise bad("'items' is only allowed when type is 'array'")


def normal_property(prop: dict[str, Any]) -> dict[str, Any]:
    """The stored form of a property definition: Glance's keys in Glance's order."""
    out: dict[str, Any] = {}
    for key in PROPERTY_KEYS:
        if key in prop and prop[key] is not None:
            value = prop[key]
            if key == "items" and isinstance(value, dict):
                value = {k: value[k] for k in ITEM_KEYS if value.get(k) is not None}
            out[key] = value
    return out


def normal_properties(props: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {name: normal_property(p) for name, p in (props or {}).items()}


def check_read_only(doc: dict[str, Any], keys: tuple[str, ...] = READ_ONLY) -> str | None:
    """The first read-only attribute present in a request document (Glance answers 403)."""
    for key in keys:
        if key in doc:
            return key
    return None


# -- records and file documents ------------------------------------------------------------
def new_namespace_record(doc: dict[str, Any], *, owner: str | None,
                         now: float) -> dict[str, Any]:
    """A new namespace record from a (validated) namespace document."""
    return {"id": uuid.uuid4().hex, "namespace": doc["namespace"],
            "display_name": doc.get("display_name"), "description": doc.get("description"),
            "visibility": doc.get("visibility") or "private",
            "protected": bool(doc.get("protected") or False), "owner": owner,
            "created_at": now, "updated_at": now}


def object_record(doc: dict[str, Any], now: float,
                  created_at: float | None = None) -> dict[str, Any]:
    """The stored form of a (validated) object document."""
    return {"name": doc["name"], "required": doc.get("required"),
            "description": doc.get("description"),
            "properties": None if doc.get("properties") is None
            else normal_properties(doc["properties"]),
            "created_at": created_at if created_at is not None else now, "updated_at": now}


def document_of(detail: dict[str, Any]) -> dict[str, Any]:
    """A namespace with its contents as a document in Glance's metadefs file format."""
    doc: dict[str, Any] = {k: detail[k] for k in NS_FIELDS if detail.get(k) is not None}
    if detail["resource_type_associations"]:
        doc["resource_type_associations"] = [
            {k: a[k] for k in ("name", "prefix", "properties_target") if a.get(k)
             is not None} for a in detail["resource_type_associations"]]
    if detail["properties"]:
        doc["properties"] = detail["properties"]
    if detail["objects"]:
        doc["objects"] = [{k: o[k] for k in ("name", "description", "required",
                                             "properties") if o.get(k)}
                          for o in detail["objects"]]
    if detail["tags"]:
        doc["tags"] = [{"name": t["name"]} for t in detail["tags"]]
    return doc


def detail_of_document(doc: dict[str, Any]) -> dict[str, Any]:
    """What the catalog's namespace detail would be once `doc` is stored (timestamps and id
    aside): document_of(detail_of_document(doc)) compares with what is stored."""
    detail = new_namespace_record(doc, owner=doc.get("owner"), now=0.0)
    detail["resource_type_associations"] = sorted(
        doc.get("resource_type_associations") or [], key=lambda a: a["name"])
    detail["properties"] = dict(sorted(normal_properties(
        doc.get("properties")).items()))
    detail["objects"] = sorted((object_record(o, 0.0)
                                for o in doc.get("objects") or []),
                               key=lambda o: o["name"])
    detail["tags"] = sorted(doc.get("tags") or [], key=lambda t: t["name"])
    return detail
