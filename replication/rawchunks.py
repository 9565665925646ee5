# The body of a reply to chunks/read (messages.ReadChunks): raw chunk bytes with a small
# header, so the serving node sends its copies straight from its segment files (sendfile)
# and the reading node slices them out of the one buffer it received, copying nothing.
# Layout: 4 bytes big-endian header length H, H bytes of msgpack [[id, length or nil], ...]
# (every requested id, in the request's order; nil: not held there), then the bytes of the
# held chunks in that order, nothing else.
# Invariants: decode() accepts a body only if its ids are exactly the requested ones in order
# and the lengths account for every byte after the header (else ProtocolError); it returns
# views of the body, never copies. Nothing here touches sockets.
from __future__ import annotations

import struct

import msgpack

from tessera.replication.messages import ProtocolError

_HEAD = struct.Struct(">I")
CONTENT_TYPE = "application/x-tessera-chunks"


def header(ids: list[bytes], lengths: list[int | None]) -> bytes:
    """The bytes preceding the chunks' bytes in the body."""
    head = msgpack.packb([[c, n] for c, n in zip(ids, lengths)], use_bin_type=True)
    return _HEAD.pack(len(head)) + head


def decode(body: bytes | bytearray | memoryview,
           ids: list[bytes]) -> list[tuple[bytes, memoryview | None]]:
    """[(id, view of its bytes or None)] for `ids`, from a chunks/read reply body."""
    view = memoryview(body)
    if len(view) < _HEAD.size:
        raise ProtocolError("a chunks/read reply shorter than its header")
    (size,) = _HEAD.unpack_from(view)
    start = _HEAD.size + size
    if start > len(view):
        raise ProtocolError("a chunks/read reply header past the body")
    try:
        items = msgpack.unpackb(view[_HEAD.size:start], raw=False)
    except Exception as exc:
        raise ProtocolError(f"undecodable chunks/read header: {exc}") from None
    if not isinstance(items, list) or len(items) != len(ids):
        raise ProtocolError("a chunks/read reply names other chunks than asked")
    out: list[tuple[bytes, memoryview | None]] = []
    pos = start
    for item, cid in zip(items, ids):
        if not isinstance(item, list) or len(item) != 2 or item[0] != cid:
            raise ProtocolError("a chunks/read reply names other chunks than asked")
        n = item[1]
        if n is None:
            out.append((cid, None))
            continue
        if not isinstance(n, int) or n < 0 or pos + n > len(view):
            raise ProtocolError("a chunks/read reply's lengths exceed its body")
        out.append((cid, view[pos:pos + n]))
        pos += n
    if pos != len(view):
        raise ProtocolError("a chunks/read reply's lengths do not cover its body")
    return out
