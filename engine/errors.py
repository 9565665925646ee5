# The engine's error hierarchy: every failure a caller can act on is one of these classes.
# Invariants: the engine raises only these (or bugs); each class names a kind of failure, not
# a transport status. The single table that turns them into HTTP statuses lives in
# tessera.http.errors; nothing else maps errors to statuses.
from __future__ import annotations


class TesseraError(Exception):
    """Base class. `message` is safe to show to the client that caused the error."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class NotFound(TesseraError):
    """The record does not exist, or the caller may not know it exists."""


class InvalidInput(TesseraError):
    """The request is malformed or violates a rule on values (Glance's 400)."""


class Forbidden(TesseraError):
    """The caller is known but may not do this (read-only or reserved attribute, policy)."""


class Conflict(TesseraError):
    """The request collides with the current state (duplicate id, wrong status, lock held)."""


class InvalidTransition(Conflict):
    """A status change that the state machine does not allow."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"Image status transition from {current} to {target} is not allowed")
        self.current = current
        self.target = target


class BadTransition(InvalidInput):
    """An invalid status transition where Glance answers 400 (delete) instead of 409."""


class TooLarge(TesseraError):
    """A size cap or quota would be exceeded."""


class StorageFull(TooLarge):
    """The data directory ran out of space; nothing half-written was kept."""


class Gone(TesseraError):
    """The image was deleted while its data was arriving."""


class UnsupportedFormat(TesseraError):
    """The bytes do not match the declared format, or the format is unsafe (Glance's 415)."""


class Unavailable(TesseraError):
    """A dependency (a peer, a store) could not be reached in time."""


class StoreAccessDenied(Unavailable):
    """An external store (the S3 object store) refused our credentials or permissions (its
    403): a setup error an operator must fix, never retried, unavailable to the client."""


class CorruptData(TesseraError):
    """Stored bytes failed verification. Never returned as data: readers abort instead."""


class StoreMismatch(TesseraError):
    """The data directory was written by an incompatible format or chunker."""
