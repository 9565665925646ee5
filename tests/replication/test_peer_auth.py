# The peer protocol's authentication: HMAC over method, path, body digest, timestamp and
# nonce. Refusals (unsigned, wrong key, replayed, stale) against a real peer listener on
# 127.0.0.1, and the codec's strictness.
import os

import pytest
import trio

from tessera.replication import messages as m
from tessera.replication.auth import AuthError, Verifier, sign
from tessera.replication.peerclient import PeerClient, PeerError, _exchange
from tessera.replication.peerserver import PeerServer

KEY = os.urandom(32)


def test_verifier_accepts_a_signed_request_once():
    v = Verifier(KEY, max_skew=30)
    headers = dict(sign(KEY, "a", "POST", "/peer/v1/status", b"body"))
    assert v.verify("POST", "/peer/v1/status", b"body", headers) == "a"
    with pytest.raises(AuthError, match="replayed"):
        v.verify("POST", "/peer/v1/status", b"body", headers)


@pytest.mark.parametrize("change", ["method", "path", "body", "key", "stale", "future",
                                    "unsigned", "signature"])
def test_verifier_refuses(change):
    v = Verifier(KEY, max_skew=30)
    now = v.clock()
    key = os.urandom(32) if change == "key" else KEY
    when = now - 31 if change == "stale" else now + 31 if change == "future" else now
    headers = dict(sign(key, "a", "POST", "/peer/v1/status", b"body", now=when))
    method, path, body = "POST", "/peer/v1/status", b"body"
    if change == "method":
        method = "GET"
    elif change == "path":
        path = "/peer/v1/digests"
    elif change == "body":
        body = b"other"
    elif change == "unsigned":
        headers = {}
    elif change == "signature":
        headers["x-tessera-signature"] = "0" * 64
    with pytest.raises(AuthError):
        v.verify(method, path, body, headers)


def test_codec_round_trip_and_strictness():
    msg = m.PutChunks([[bytes(32), b"x"]], True)
    assert m.decode_request(msg.ROUTE, m.encode(msg)) == msg
    with pytest.raises(m.ProtocolError):
        m.decode(m.PutChunks, m.encode(m.GetChunks([])))
    with pytest.raises(m.ProtocolError):
        m.check_ids([b"short"])
    with pytest.raises(KeyError):
        m.decode_request("/v2/images", b"")


async def _status(node, msg):
    return m.Status({"caller": node})


async def _serve(nursery):
    server = PeerServer(Verifier(KEY, max_skew=30), {m.GetStatus: _status})
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    return server, f"{host}:{port}"


async def _raw(address, path, body, headers, method="POST"):
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        return await _exchange(stream, address, path, body, headers)
    finally:
        await stream.aclose()


async def test_peer_listener_refuses_unsigned_wrong_key_replayed_and_stale(nursery):
    server, address = await _serve(nursery)
    good = PeerClient(KEY, "a")
    reply = await good.call(address, m.GetStatus())
    assert reply.report == {"caller": "a"}
    body = m.encode(m.GetStatus())
    route = m.GetStatus.ROUTE
    status = (await _raw(address, route, body, []))[0]
    assert status == 401                                                   # unsigned
    with pytest.raises(PeerError, match="401"):
        await PeerClient(os.urandom(32), "x").call(address, m.GetStatus())  # wrong key
    signed = sign(KEY, "a", "POST", route, body)
    assert (await _raw(address, route, body, signed))[0] == 200
    assert (await _raw(address, route, body, signed))[0] == 401            # replayed
    stale = sign(KEY, "a", "POST", route, body, now=1000.0)
    assert (await _raw(address, route, body, stale))[0] == 401             # stale
    assert server.refused == 4
    # only peer routes exist here: the public API is not served on the peer port
    assert (await _raw(address, "/v2/images", b"", sign(KEY, "a", "POST", "/v2/images",
                                                        b"")))[0] == 404
    await good.aclose()


async def test_bad_body_is_a_400_not_a_crash(nursery):
    _, address = await _serve(nursery)
    route = m.GetStatus.ROUTE
    body = b"\xc1not msgpack"
    assert (await _raw(address, route, body, sign(KEY, "a", "POST", route, body)))[0] == 400
    reply = await PeerClient(KEY, "a").call(address, m.GetStatus())     # still serving
    assert reply.report["caller"] == "a"


async def test_oversized_body_is_refused_with_413(nursery, monkeypatch):
    from tessera.replication import peerserver
    monkeypatch.setattr(peerserver, "MAX_BODY", 1024)
    _, address = await _serve(nursery)
    route = m.PutDocs.ROUTE
    body = m.encode(m.PutDocs([{"x": b"y" * 4096}]))
    assert (await _raw(address, route, body, sign(KEY, "a", "POST", route, body)))[0] == 413
