# The upload's inspection hook: inspect_stream(declared disk_format, container_format) gives
# the object the upload path passes every piece through, and whose finish(total) returns the
# record's virtual_size or raises UnsupportedFormat before anything is committed.
# Invariants: inspection never changes or delays the pieces (watch() hands each piece on
# after feeding it); memory is the inspector's fixed bound; decisions are policy.decide's.
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from tessera.engine.formats.inspector import FormatInspector
from tessera.engine.formats.policy import decide
from tessera.engine.formats.verdict import Verdict


class UploadInspection:
    def __init__(self, declared_disk_format: str | None,
                 container_format: str | None) -> None:
        self.declared = declared_disk_format
        self.container = container_format
        self.inspector = FormatInspector()
        self.verdict: Verdict | None = None

    def feed(self, piece: Any) -> None:
        self.inspector.feed(piece)

    def finish(self, total_size: int) -> int | None:
        """The virtual_size for the record; UnsupportedFormat when the upload is refused."""
        self.verdict = self.inspector.finish(total_size)
        return decide(self.verdict, self.declared, self.container)

    def watch(self, source: Any) -> "_Watched":
        return _Watched(source, self)


class _Watched:
    """An async iterator over `source` that feeds each piece to the inspection first."""

    def __init__(self, source: Any, inspection: UploadInspection) -> None:
        self._source = source
        self._it: AsyncIterator[Any] | None = None
        self._feed = inspection.feed

    def __aiter__(self) -> "_Watched":
        return self

    async def __anext__(self) -> Any:
        if self._it is None:
            self._it = self._source.__aiter__()
        piece = await self._it.__anext__()
        self._feed(piece)
        return piece


def inspect_stream(declared_disk_format: str | None,
                   container_format: str | None) -> UploadInspection:
    return UploadInspection(declared_disk_format, container_format)
