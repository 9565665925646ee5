# Glance's image schema rules on values: which attributes are read-only or reserved, the
# types/enums/lengths of the base properties, extra-property rules, and the per-image quotas.
# Invariants: messages are Glance's exact strings where glance-api.md gives them; a value
# that passes `check_value` can be stored as is.
from __future__ import annotations

from typing import Any

from tessera.engine.errors import Forbidden, InvalidInput, TooLarge

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")

READ_ONLY = frozenset({"created_at", "updated_at", "status", "checksum", "os_hash_algo",
                       "os_hash_value", "size", "virtual_size", "direct_url", "self", "file",
                       "schema", "id", "stores"})
# Read-only even at create (checked before the schema, as Glance's deserializer does).
CREATE_DISALLOWED = ("direct_url", "self", "file", "schema", "stores")
RESERVED = frozenset({"location", "deleted", "deleted_at"})
RESERVED_PREFIX = "os_glance"

# Writable base properties (settable by PATCH); everything else not read-only is extra.
BASE_WRITABLE = ("name", "visibility", "protected", "os_hidden", "min_disk", "min_ram", "tags",
                 "owner", "disk_format", "container_format")

_UUID_PATTERN = ("^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
                 "-([0-9a-fA-F]){12}$")


def schema_error(reason: str) -> InvalidInput:
    return InvalidInput(f"Provided object does not match schema 'image': {reason}")


def _type_name(value: Any) -> str:
    return repr(value)


def _string(name: str, value: Any, *, nullable: bool, max_length: int | None = 255) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str):
        kinds = "['null', 'string']" if nullable else "'string'"
        raise schema_error(f"{_type_name(value)} is not of type {kinds}")
    if max_length is not None and len(value) > max_length:
        raise schema_error(f"{value!r} is too long")


def _enum(name: str, value: Any, choices: tuple, *, nullable: bool) -> None:
    allowed = ((None,) if nullable else ()) + choices
    if value not in allowed or isinstance(value, bool):
        raise schema_error(f"{value!r} is not one of {list(allowed)!r}")


def _integer(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise schema_error(f"{_type_name(value)} is not of type 'integer'")
    if value < 0:
        raise schema_error(f"{value} is less than the minimum of 0")


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise schema_error(f"{_type_name(value)} is not of type 'boolean'")


def check_tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise schema_error(f"{_type_name(value)} is not of type 'array'")
    for tag in value:
        _string("tags", tag, nullable=False)
    return tuple(sorted(set(value)))


def check_value(name: str, value: Any) -> Any:
    """Validate one writable attribute (base or extra); return the value to store."""
    if name == "name" or name == "owner":
        _string(name, value, nullable=True)
    elif name == "visibility":
        _enum(name, value, VISIBILITIES, nullable=False)
    elif name == "disk_format":
        _enum(name, value, DISK_FORMATS, nullable=True)
    elif name == "container_format":
        _enum(name, value, CONTAINER_FORMATS, nullable=True)
    elif name in ("protected", "os_hidden"):
        _boolean(name, value)
    elif name in ("min_disk", "min_ram"):
        _integer(name, value)
    elif name == "tags":
        return check_tags(value)
    else:
        check_extra_name(name)
        if not isinstance(value, str):
            raise schema_error(f"{_type_name(value)} is not of type 'string'")
    return value


def check_extra_name(name: str) -> None:
    if len(name) > 255:
        raise schema_error(f"{name!r} is too long")


def check_access(name: str) -> None:
    """Read-only and reserved attributes (Glance's 403s)."""
    if name in READ_ONLY:
        raise Forbidden(f"Attribute '{name}' is read-only.")
    if name in RESERVED or name.startswith(RESERVED_PREFIX):
        raise Forbidden(f"Attribute '{name}' is reserved.")


def check_create_id(value: Any) -> None:
    if not isinstance(value, str):
        raise schema_error(f"{_type_name(value)} is not of type 'string'")
    from tessera.engine.records import is_uuid
    if not is_uuid(value):
        raise schema_error(f"{value!r} does not match {_UUID_PATTERN!r}")


def counted_properties(properties: dict[str, str]) -> int:
    return sum(1 for k in properties if not k.startswith(RESERVED_PREFIX))


def check_property_quota(properties: dict[str, str], quota: int) -> None:
    count = counted_properties(properties)
    if 0 <= quota < count:
        raise TooLarge("The limit has been exceeded on the number of allowed image "
                       f"properties. Attempted: {count}, Maximum: {quota}")


def check_tag_quota(tags: tuple[str, ...], quota: int) -> None:
    if 0 <= quota < len(tags):
        raise TooLarge("The limit has been exceeded on the number of allowed image tags. "
                       f"Attempted: {len(tags)}, Maximum: {quota}")


def new_record(fields: dict[str, Any], *, owner: str | None, image_id: str, now: float,
               property_quota: int, tag_quota: int):
    """The queued record a create request describes, or Glance's error for it."""
    from tessera.engine.records import ImageRecord
    if not isinstance(fields, dict):
        raise InvalidInput("Body expected in request.")
    for key in CREATE_DISALLOWED:
        if key in fields:
            raise Forbidden(f"Attribute '{key}' is read-only.")
    values: dict[str, Any] = {}
    properties: dict[str, str] = {}
    for key, value in fields.items():
        if key == "id":
            check_create_id(value)
        elif key in READ_ONLY or key in RESERVED or key == "locations" \
                or key.startswith(RESERVED_PREFIX):
            continue
        elif key in BASE_WRITABLE:
            values[key] = check_value(key, value)
        else:
            check_extra_name(key)
            if not isinstance(value, str):
                raise schema_error(f"{_type_name(value)} is not of type 'string'")
            properties[key] = value
    for key in fields:
        if key != "id":
            if key == "locations":
                raise Forbidden(f"Attribute '{key}' is reserved.")
            check_access(key)
    tags = values.pop("tags", ())
    check_property_quota(properties, property_quota)
    check_tag_quota(tags, tag_quota)
    return ImageRecord(
        id=image_id, name=values.get("name"), status="queued",
        visibility=values.get("visibility", "shared"),
        protected=values.get("protected", False), os_hidden=values.get("os_hidden", False),
        checksum=None, os_hash_algo=None, os_hash_value=None, size=None, virtual_size=None,
        disk_format=values.get("disk_format"), container_format=values.get("container_format"),
        min_disk=values.get("min_disk", 0), min_ram=values.get("min_ram", 0),
        owner=values["owner"] if "owner" in values else owner,
        created_at=now, updated_at=now, tags=tags, properties=properties)
