# ChunkId: the name of a chunk, the 32-byte BLAKE3 digest of its bytes.
# Invariants: a ChunkId always holds exactly 32 bytes; ids that come from outside (hex in a
# request, a key read back from disk) are parsed here and nowhere else, so no key or path is
# ever built from an unvalidated id. Hot paths inside the engine carry the raw 32 bytes.
from __future__ import annotations

from dataclasses import dataclass

import blake3

from tessera.engine.errors import InvalidInput

DIGEST_SIZE = 32


@dataclass(frozen=True, order=True)
class ChunkId:
    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != DIGEST_SIZE:
            raise InvalidInput(f"a chunk id is {DIGEST_SIZE} bytes, got {self.raw!r:.80}")

    @classmethod
    def parse(cls, text: str) -> "ChunkId":
        """Parse 64 lower- or upper-case hex digits."""
        if not isinstance(text, str) or len(text) != 2 * DIGEST_SIZE:
            raise InvalidInput("a chunk id is 64 hex digits")
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise InvalidInput("a chunk id is 64 hex digits") from None

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview) -> "ChunkId":
        """The id of `data` (hashes it)."""
        return cls(blake3.blake3(data).digest())

    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.raw.hex()

    def __bytes__(self) -> bytes:
        return self.raw


def digest(data: bytes | bytearray | memoryview) -> bytes:
    """Raw BLAKE3-256 of `data` (the hot-path form of ChunkId.of)."""
    return blake3.blake3(data).digest()
