# Glance's default policies (secure-RBAC defaults, glance-api.md 1.13) as pure functions over
# (caller, image record). Invariants: no I/O here -- the handler looks the caller's membership
# up and passes `is_member`; `visible` is Glance's database-level visibility (an invisible
# image is "not found", never "forbidden"); every other rule assumes a visible image, and a
# failed rule on an image the caller may not even `get` is reported as 404 by the handler
# (`deny`), exactly as Glance's ImageAPIPolicy turns 403 into 404.
from __future__ import annotations

from tessera.engine.errors import NotFound
from tessera.engine.records import ImageRecord
from tessera.http.auth import Caller
from tessera.http.errors import HTTPError

_OPEN = ("community", "public", "shared")


def visible(c: Caller, rec: ImageRecord, is_member: bool) -> bool:
    """Glance's is_image_visible: may the caller know this image exists at all?"""
    if c.is_admin or rec.owner is None or rec.visibility in ("public", "community"):
        return True
    if c.project_id is None:
        return False
    if rec.owner == c.project_id:
        return True
    return rec.visibility == "shared" and is_member


def _member_target(c: Caller, rec: ImageRecord) -> str | None:
    """Glance sets the image's `member` to the caller's project when it found a shared image
    it does not own (it can only have found it as a member)."""
    if rec.visibility == "shared" and c.project_id != rec.owner:
        return c.project_id
    return None


def _owns(c: Caller, rec: ImageRecord) -> bool:
    return c.project_id is not None and c.project_id == rec.owner


def _project_member(c: Caller, rec: ImageRecord) -> bool:
    return c.has_role("member") and _owns(c, rec)


def _reachable(c: Caller, rec: ImageRecord) -> bool:
    member = _member_target(c, rec)
    return _owns(c, rec) or (member is not None and member == c.project_id) \
        or rec.visibility in _OPEN


def get_image(c: Caller, rec: ImageRecord) -> bool:
    return c.is_admin or (c.has_role("reader") and _reachable(c, rec))


def download_image(c: Caller, rec: ImageRecord) -> bool:
    return c.is_admin or (c.has_role("member") and _reachable(c, rec))


def get_images(c: Caller) -> bool:
    return c.is_admin or c.has_role("reader")


def owner_action(c: Caller, rec: ImageRecord) -> bool:
    """modify_image, delete_image, upload_image, deactivate, reactivate, add_member,
    delete_member, communitize_image: admin or a member of the owning project."""
    return c.is_admin or _project_member(c, rec)


def publicize_image(c: Caller) -> bool:
    return c.is_admin


def communitize_image(c: Caller, owner: str | None) -> bool:
    return c.is_admin or (c.has_role("member") and c.project_id is not None
                          and c.project_id == owner)


def add_image(c: Caller, owner: str | None) -> bool:
    """`owner` is the owner the new image would get (the caller's project by default)."""
    return c.is_admin or (c.has_role("member") and c.project_id is not None
                          and c.project_id == owner)


def get_members(c: Caller, rec: ImageRecord) -> bool:
    """get_member and get_members (after get_image)."""
    if c.is_admin:
        return True
    member = _member_target(c, rec)
    return c.has_role("reader") and (_owns(c, rec) or
                                     (member is not None and member == c.project_id))


def modify_member(c: Caller, rec: ImageRecord) -> bool:
    if c.is_admin:
        return True
    member = _member_target(c, rec)
    return c.has_role("member") and member is not None and member == c.project_id


def add_image_location(c: Caller, rec: ImageRecord) -> bool:
    """POST /v2/images/{id}/locations: the service role (or admin), or a member of the
    owning project."""
    return c.is_admin or c.has_role("service") or _project_member(c, rec)


def fetch_image_location(c: Caller) -> bool:
    """GET /v2/images/{id}/locations: Glance's service_api (service role, or admin)."""
    return c.is_admin or c.has_role("service")


def stores_info_detail(c: Caller) -> bool:
    return c.is_admin or c.has_role("service")


def forbidden(action: str) -> HTTPError:
    return HTTPError(403, f"You are not authorized to complete {action} action.")


def enforce(c: Caller, rec: ImageRecord, allowed: bool, action: str) -> None:
    """Raise for a failed rule on a visible image: 403, or 404 when the caller may not even
    `get` the image (Glance hides images the caller cannot see)."""
    if allowed:
        return
    if not get_image(c, rec):
        raise NotFound("")
    raise forbidden(action)
