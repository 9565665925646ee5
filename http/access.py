# Loading an image on behalf of a caller: the engine lookup plus Glance's database-level
# visibility, so every handler hides images the same way.
# Invariants: an image the caller may not see is indistinguishable from a missing one (same
# NotFound, same message); a non-UUID id is "not found", never "invalid".
from __future__ import annotations

from typing import Any

from tessera.engine.errors import Forbidden, InvalidInput, NotFound
from tessera.engine.records import ImageRecord
from tessera.http import policy
from tessera.http.auth import Caller


def is_member(engine: Any, caller: Caller, rec: ImageRecord) -> bool:
    """Is the caller's project a member (any status) of this shared image it does not own?"""
    if caller.project_id is None or rec.visibility != "shared" or rec.owner == caller.project_id:
        return False
    try:
        engine.get_member(rec.id, caller.project_id)
    except (NotFound, InvalidInput, Forbidden):   # Forbidden: no longer shared meanwhile
        return False
    return True


def find_image(engine: Any, caller: Caller, image_id: str,
               missing: str | None = None) -> ImageRecord:
    """The record if the caller may know it exists, else NotFound(`missing`)."""
    try:
        rec = engine.get_image(image_id)
    except (NotFound, InvalidInput):
        raise NotFound(_missing(image_id, missing)) from None
    if not policy.visible(caller, rec, is_member(engine, caller, rec)):
        raise NotFound(_missing(image_id, missing))
    return rec


def _missing(image_id: str, missing: str | None) -> str:
    return missing if missing is not None else f"No image found with ID {image_id}"
