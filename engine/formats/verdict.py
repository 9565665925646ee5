# The values an inspection produces: one Problem per failed safety check and the Verdict on
# a whole stream. Invariants: frozen; a Verdict names at most one format (`format` is None
# only when the content matched several formats, which is itself a refusal); `safe` is True
# exactly when `reasons` is empty.
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """A failed safety check: `check` is a short stable name, `detail` says what was found."""
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    format: str | None              # detected format name; None when several matched
    virtual_size: int | None        # disk size the format describes (bytes), None if unknown
    size: int                       # bytes inspected (the whole stream)
    reasons: tuple[Problem, ...] = ()
    matches: tuple[str, ...] = ()   # every format whose signature matched (sorted)

    @property
    def safe(self) -> bool:
        return not self.reasons

    def failed(self, check: str) -> bool:
        return any(p.check == check for p in self.reasons)
