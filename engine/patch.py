# JSON-patch updates of an image record, with Glance's rules (glance-api.md 1.4).
# Invariants:
# - apply() is pure: it returns the new record or raises; the caller stores the result in the
#   same write transaction it read the record in, so a patch applies entirely or not at all.
# - As in Glance, every op is validated first (op name, pointer, read-only/reserved, value
#   schema), then the ops are applied in order, then quotas are checked.
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tessera.engine.errors import Conflict, Forbidden, InvalidInput
from tessera.engine.records import ImageRecord
from tessera.engine.validation import (BASE_WRITABLE, check_access, check_property_quota,
                                       check_tag_quota, check_value)

NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "NO_VALUE"})()


@dataclass(frozen=True)
class PatchOp:
    op: str                 # "add" | "remove" | "replace" (anything else: InvalidInput)
    path: str               # the JSON pointer as sent, e.g. "/name"
    value: Any = NO_VALUE   # absent for remove
    dialect: str = "2.1"    # "2.1" (draft 10) or "2.0" (draft 4: add of an existing -> 409)


def _decode_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise InvalidInput(f'Pointer `{pointer}` does not start with "/".')
    if re.search(r"/\s*?/", pointer[1:]):
        raise InvalidInput(f'Pointer `{pointer}` contains adjacent "/".')
    if len(pointer) > 1 and pointer.endswith("/"):
        raise InvalidInput(f'Pointer `{pointer}` end with "/".')
    if pointer[1:].strip() == "/":
        raise InvalidInput(f"Pointer `{pointer}` does not contains valid token.")
    if re.search("~[^01]", pointer) or pointer.endswith("~"):
        raise InvalidInput(f'Pointer `{pointer}` contains "~" not part of a recognized '
                           f"escape sequence.")
    return [part.replace("~1", "/").replace("~0", "~").strip()
            for part in pointer.lstrip("/").split("/")]


def _validate(op: PatchOp) -> tuple[str, Any]:
    """Glance's deserializer checks for one op; returns (attribute, checked value)."""
    if op.op not in ("add", "remove", "replace"):
        raise InvalidInput(f"Invalid operation: `{op.op}`.")
    path = _decode_pointer(op.path)
    root = path[0]
    depth = {"add": 2, "remove": 2, "replace": 1}[op.op] if root == "locations" else 1
    if len(path) != depth:
        raise InvalidInput(f"Invalid JSON pointer for this resource: '/{'/'.join(path)}'")
    check_access(root)
    if root == "locations":
        raise Forbidden("It's not allowed to update/add/remove locations if locations are "
                        "invisible.")
    if op.op == "remove":
        return root, NO_VALUE
    if op.value is NO_VALUE:
        raise InvalidInput("Unable to find `value` in JSON Schema change")
    return root, check_value(root, op.value)


def apply(rec: ImageRecord, ops: list[PatchOp], *, is_admin: bool, now: float,
          property_quota: int, tag_quota: int) -> ImageRecord:
    checked = [(op, *_validate(op)) for op in ops]
    base: dict[str, Any] = {}
    props = dict(rec.properties)
    added_props = False

    def has_base(name: str) -> bool:
        return name in BASE_WRITABLE

    for op, name, value in checked:
        if op.op == "remove":
            if has_base(name):
                raise Forbidden(f"Property {name} may not be removed.")
            if name not in props:
                raise Conflict(f"Property {name} does not exist.")
            del props[name]
            continue
        if op.op == "replace":
            if name == "owner" and not is_admin:
                raise Forbidden("Owner can't be updated by non admin.")
            if not has_base(name) and name not in props:
                raise Conflict(f"Property {name} does not exist.")
        elif op.dialect == "2.0" and (has_base(name) or name in props):
            raise Conflict(f"Property {name} already present.")
        if has_base(name):
            if name in ("disk_format", "container_format") \
                    and rec.status not in ("queued", "importing"):
                raise Forbidden(f"Attribute {name} can be only replaced for a queued image.")
            base[name] = value
        else:
            added_props = added_props or name not in props
            props[name] = value
    if added_props:
        check_property_quota(props, property_quota)
    if "tags" in base and len(base["tags"]) > len(rec.tags):
        check_tag_quota(base["tags"], tag_quota)
    return rec.evolve(properties=props, updated_at=now, **base)
