# Peer protocol messages: frozen dataclasses and their sans-IO codec. A request is one
# message encoded as a msgpack map in the body of `POST <ROUTE>`; its reply is the matching
# reply dataclass encoded the same way. Nothing here touches sockets.
# Invariants: every route is under /peer/v1/; decoding accepts exactly the fields of the
# dataclass (unknown or missing fields are a ProtocolError); chunk ids are 32 bytes.
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import msgpack

PREFIX = "/peer/v1/"


class ProtocolError(Exception):
    pass


@dataclass(frozen=True)
class HaveChunks:
    """Which of `ids` does the peer lack?"""
    ROUTE: ClassVar[str] = PREFIX + "chunks/have"
    ids: list


@dataclass(frozen=True)
class Missing:
    ids: list


@dataclass(frozen=True)
class HoldChunks:
    """Which of `ids` does the peer lack? Those it holds that no manifest references yet
    restart their reaper grace (a write's copies outlive its confirmation)."""
    ROUTE: ClassVar[str] = PREFIX + "chunks/hold"
    ids: list


@dataclass(frozen=True)
class PutChunks:
    """Keep these verified chunks; `store`: the receiver owns them (else cache)."""
    ROUTE: ClassVar[str] = PREFIX + "chunks/put"
    items: list          # [[id, bytes], ...]
    store: bool


@dataclass(frozen=True)
class Stored:
    added: int


@dataclass(frozen=True)
class GetChunks:
    ROUTE: ClassVar[str] = PREFIX + "chunks/get"
    ids: list


@dataclass(frozen=True)
class Chunks:
    items: list          # [[id, bytes or None], ...]


@dataclass(frozen=True)
class ReadChunks:
    """The held ones of `ids` as raw bytes: the reply is not a msgpack message but a
    header and the chunks' bytes (replication/rawchunks.py), sent from the segment files."""
    ROUTE: ClassVar[str] = PREFIX + "chunks/read"
    ids: list


@dataclass(frozen=True)
class PutDocs:
    """Image documents (engine/replica.py export_doc), applied last-writer-wins."""
    ROUTE: ClassVar[str] = PREFIX + "docs/put"
    docs: list


@dataclass(frozen=True)
class Applied:
    applied: int


@dataclass(frozen=True)
class GetDocs:
    ROUTE: ClassVar[str] = PREFIX + "docs/get"
    ids: list            # image ids (strings)


@dataclass(frozen=True)
class Docs:
    docs: list


@dataclass(frozen=True)
class GetDigests:
    """Bucket digests of `kind` ("chunks": ids held by the answering node that `owner` owns;
    "stamps": image stamps)."""
    ROUTE: ClassVar[str] = PREFIX + "digests"
    kind: str
    owner: str


@dataclass(frozen=True)
class Digests:
    buckets: list        # 256 digests (bytes)
    horizon: int         # the answering node's reclaim watermark (engine/replica.py)


@dataclass(frozen=True)
class GetBucket:
    """The entries of the buckets that differ (one scan answers them all)."""
    ROUTE: ClassVar[str] = PREFIX + "bucket"
    kind: str
    owner: str
    buckets: list        # bucket numbers 0..255


@dataclass(frozen=True)
class Bucket:
    entries: list        # [[key, stamp], ...] (stamp 0 for chunks)


@dataclass(frozen=True)
class GetStatus:
    ROUTE: ClassVar[str] = PREFIX + "status"


@dataclass(frozen=True)
class Status:
    report: dict


REQUESTS: dict[str, type] = {cls.ROUTE: cls for cls in (
    HaveChunks, HoldChunks, PutChunks, GetChunks, ReadChunks, PutDocs, GetDocs, GetDigests,
    GetBucket, GetStatus)}
REPLIES: dict[type, type] = {HaveChunks: Missing, HoldChunks: Missing, PutChunks: Stored,
                             GetChunks: Chunks, PutDocs: Applied, GetDocs: Docs,
                             GetDigests: Digests, GetBucket: Bucket, GetStatus: Status}


def encode(msg: Any) -> bytes:
    # Fields hold plain lists, dicts, bytes and scalars: a shallow map is enough (asdict
    # would deep-copy every list of chunk bytes first).
    return msgpack.packb({f.name: getattr(msg, f.name) for f in fields(msg)},
                         use_bin_type=True)


def decode(cls: type, body: bytes) -> Any:
    try:
        data = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        raise ProtocolError(f"undecodable body: {exc}") from None
    names = {f.name for f in fields(cls)}
    if not isinstance(data, dict) or set(data) != names:
        raise ProtocolError(f"{cls.__name__} needs exactly {sorted(names)}")
    return cls(**data)


def decode_request(path: str, body: bytes) -> Any:
    cls = REQUESTS.get(path)
    if cls is None:
        raise KeyError(path)
    return decode(cls, body)


def check_ids(ids: Any) -> list[bytes]:
    if not isinstance(ids, list) or not all(isinstance(c, bytes) and len(c) == 32
                                            for c in ids):
        raise ProtocolError("chunk ids are 32-byte strings")
    return ids
