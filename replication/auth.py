# Peer request authentication: HMAC-SHA256 with the cluster key over the method, path,
# SHA-256 of the body, a timestamp and a nonce (docs/replication-protocol.md).
# Invariants: a request is accepted only with a valid signature, a timestamp within
# max_skew of our clock, and a nonce not seen within the skew window (replays refused);
# signatures are compared in constant time; the key never leaves this module's callers.
from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

H_NODE = "x-tessera-node"
H_TIME = "x-tessera-time"
H_NONCE = "x-tessera-nonce"
H_SIG = "x-tessera-signature"


class AuthError(Exception):
    pass


def _message(method: str, path: str, body: bytes, ts: str, nonce: str) -> bytes:
    body_digest = hashlib.sha256(body).hexdigest()
    return "\n".join((method.upper(), path, body_digest, ts, nonce)).encode()


def sign(key: bytes, node_id: str, method: str, path: str, body: bytes, *,
         now: float | None = None, nonce: str | None = None) -> list[tuple[str, str]]:
    """The headers that authenticate one request."""
    ts = f"{time.time() if now is None else now:.3f}"
    nonce = nonce or os.urandom(16).hex()
    sig = hmac.new(key, _message(method, path, body, ts, nonce), hashlib.sha256).hexdigest()
    return [(H_NODE, node_id), (H_TIME, ts), (H_NONCE, nonce), (H_SIG, sig)]


@dataclass
class Verifier:
    key: bytes
    max_skew: float = 30.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._seen: dict[str, float] = {}

    def verify(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> str:
        """The calling node's id, or AuthError."""
        try:
            node, ts, nonce, sig = (headers[h] for h in (H_NODE, H_TIME, H_NONCE, H_SIG))
        except KeyError:
            raise AuthError("unsigned request") from None
        expected = hmac.new(self.key, _message(method, path, body, ts, nonce),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig):
            raise AuthError("bad signature")
        try:
            when = float(ts)
        except ValueError:
            raise AuthError("bad timestamp") from None
        now = self.clock()
        if abs(now - when) > self.max_skew:
            raise AuthError("timestamp outside the allowed clock skew")
        self._forget(now)
        if nonce in self._seen:
            raise AuthError("replayed request")
        self._seen[nonce] = when
        return node

    def _forget(self, now: float) -> None:
        if len(self._seen) < 4096:
            return
        horizon = now - 2 * self.max_skew
        self._seen = {n: t for n, t in self._seen.items() if t >= horizon}
