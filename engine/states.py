# Glance's image status state machine: ONE table of allowed transitions plus the two rules
# that go with it (glance-api.md 2.2).
# Invariants:
# - Every status change in the engine goes through `transition()`; nothing assigns
#   `status` on a record directly.
# - Leaving queued/uploading for saving/active/importing needs disk_format and
#   container_format (Glance's ValueError, a 400); entering queued clears size and
#   virtual_size.
from __future__ import annotations

from tessera.engine.errors import InvalidInput, InvalidTransition
from tessera.engine.records import ImageRecord

STATUSES = ("queued", "saving", "active", "killed", "deleted", "pending_delete",
            "deactivated", "uploading", "importing")

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"saving", "uploading", "importing", "active", "deleted"}),
    "saving": frozenset({"active", "killed", "deleted", "queued"}),
    "uploading": frozenset({"importing", "queued", "deleted"}),
    "importing": frozenset({"active", "deleted", "queued"}),
    "active": frozenset({"pending_delete", "deleted", "deactivated"}),
    "deactivated": frozenset({"active", "deleted"}),
    "pending_delete": frozenset({"deleted", "active"}),
    "killed": frozenset({"deleted"}),
    "deleted": frozenset(),
}

_NEEDS_FORMATS_FROM = frozenset({"queued", "uploading"})
_NEEDS_FORMATS_TO = frozenset({"saving", "active", "importing"})

# Images in these states appear in no listing (and in no secondary index). pending_delete
# (delayed delete) is gone for the API as in Glance, where it is a soft-deleted row.
UNLISTED = frozenset({"killed", "deleted", "pending_delete"})
# Images in these states are "not found" for the API (the scrubber and restore still see them).
GONE = frozenset({"deleted", "pending_delete"})


def check(current: str, target: str) -> None:
    """Raise InvalidTransition unless the table allows current -> target."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current, target)


def missing_formats(rec: ImageRecord) -> list[str]:
    return [k for k in ("disk_format", "container_format") if not getattr(rec, k)]


def transition(rec: ImageRecord, target: str, *, now: float, **changes) -> ImageRecord:
    """The record moved to `target` with `changes` applied, or the error Glance raises."""
    check(rec.status, target)
    if rec.status in _NEEDS_FORMATS_FROM and target in _NEEDS_FORMATS_TO:
        missing = missing_formats(rec.evolve(**changes) if changes else rec)
        if len(missing) == 1:
            raise InvalidInput(f"Property {missing[0]} must be set prior to saving data.")
        if missing:
            raise InvalidInput(
                f"Properties {', '.join(missing)} must be set prior to saving data.")
    if target == "queued":
        changes["size"] = None
        changes["virtual_size"] = None
    return rec.evolve(status=target, updated_at=now, **changes)
