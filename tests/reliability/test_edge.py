# The HTTP edge under attack, against a real node (a `tessera serve` subprocess started with
# short timeouts from a config file): slowloris heads, slow bodies, a client that stops
# reading, 1,000 idle connections, oversized heads, request smuggling shapes, absurd methods
# and targets, hostile JSON. Every attack gets a clean 4xx (or is cut by a timeout), the
# smuggled part of a request is never answered, and a normal request on another connection is
# served all along. No assertion is on wall-clock time: the timeouts only guard against hangs.
import json

import pytest
import trio

HEADER_TIMEOUT = 1.0            # the node's header, idle and body timeouts (config file)
IDLE_CONNECTIONS = 1000
GUARD = 30.0                    # an exchange that takes longer is a hang: fail, don't wait


@pytest.fixture(scope="module")
def node(tmp_path_factory, tools):
    base = tmp_path_factory.mktemp("edge")
    config = base / "tessera.toml"
    config.write_text(
        "[api]\n"
        f"header_timeout = {HEADER_TIMEOUT}\n"
        f"idle_timeout = {HEADER_TIMEOUT}\n"
        f"body_timeout = {HEADER_TIMEOUT}\n"
        "max_connections = 1500\n"
        "max_header_bytes = 65536\n"
        "max_json_body = 1048576\n"
        "[engine]\n"
        "durable = false\n")
    tools.raise_nofile(IDLE_CONNECTIONS + 500)        # the node inherits the limit
    server = tools.launch(base, "--config", str(config))
    yield server
    server.stop()


def req(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(h + "\r\n" for h in headers)
    if body and not any(h.lower().startswith(("content-length", "transfer-encoding"))
                        for h in headers):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


async def exchange(tools, port: int, data: bytes, *, split: int = 0) -> tuple[int, bytes]:
    """Send `data` (in pieces of `split` bytes if given), read one response; the status and
    body. The connection is closed afterwards."""
    with trio.fail_after(GUARD):
        c = await tools.Raw.connect(port)
        try:
            try:
                step = split or len(data) or 1
                for i in range(0, len(data), step):
                    await c.send(data[i:i + step])
            except (trio.BrokenResourceError, ConnectionError):
                pass             # the server answered early and stopped reading: read it
            status, _, body = await c.response()
            return status, body
        finally:
            await c.aclose()


async def healthy(tools, port: int) -> None:
    """A normal request on a fresh connection is served (the node kept serving)."""
    status, body = await exchange(tools, port, req("GET", "/healthcheck"))
    assert (status, body) == (200, b"OK")


async def create_image(tools, port: int) -> str:
    body = json.dumps({"disk_format": "raw", "container_format": "bare"}).encode()
    status, out = await exchange(tools, port, req("POST", "/v2/images", "Content-Type: "
                                                  "application/json", body=body))
    assert status == 201
    return json.loads(out)["id"]


async def image_status(tools, port: int, image_id: str) -> str:
    status, out = await exchange(tools, port, req("GET", f"/v2/images/{image_id}",
                                                  "Accept: application/json"))
    assert status == 200
    return json.loads(out)["status"]


# -- slow and idle clients ------------------------------------------------------------------

async def test_slowloris_heads_are_cut_while_others_are_served(node, tools):
    slow_clients = 50
    cut = []

    async def trickle(c) -> None:
        head = req("GET", "/healthcheck", "X-Slow: " + "y" * 500)
        try:
            for i in range(len(head)):
                await c.send(head[i:i + 1])
                await trio.sleep(0.05)       # the whole head would take ~30 s
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        cut.append(await c.closed())

    with trio.fail_after(GUARD):
        clients = [await tools.Raw.connect(node.port) for _ in range(slow_clients)]
        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(trickle, c)
            await trio.sleep(0.2)
            await healthy(tools, node.port)
        for c in clients:
            await c.aclose()
    assert cut == [True] * slow_clients
    tools.record("slowloris_clients_cut", slow_clients)
    await healthy(tools, node.port)


async def test_a_slow_body_is_cut_and_the_upload_rolls_back(node, tools):
    image_id = await create_image(tools, node.port)
    with trio.fail_after(GUARD):
        c = await tools.Raw.connect(node.port)
        await c.send(req("PUT", f"/v2/images/{image_id}/file",
                         "Content-Type: application/octet-stream", "Content-Length: 1000000")
                     + b"x" * 5000)
        await healthy(tools, node.port)            # served while the upload stalls
        assert await c.closed()                    # cut after body_timeout
        await c.aclose()
    with trio.fail_after(GUARD):
        while await image_status(tools, node.port, image_id) != "queued":
            await trio.sleep(0.05)


async def test_a_client_that_stops_reading_is_cut(node, tools):
    image_id = await create_image(tools, node.port)
    data = bytes(range(256)) * (16 * 1024)          # 4 MiB: more than the socket buffers
    status, _ = await exchange(tools, node.port, req(
        "PUT", f"/v2/images/{image_id}/file", "Content-Type: application/octet-stream",
        body=data))
    assert status == 204
    with trio.fail_after(GUARD):
        c = await tools.Raw.connect(node.port)
        await c.send(req("GET", f"/v2/images/{image_id}/file"))
        await trio.sleep(HEADER_TIMEOUT * 2)       # read nothing past body_timeout
        await healthy(tools, node.port)
        got = 0
        try:
            while True:
                piece = await c.stream.receive_some(1 << 20)
                if not piece:
                    break
                got += len(piece)
        except (trio.BrokenResourceError, ConnectionError):
            pass
        await c.aclose()
    assert got < len(data)                        # the server gave up on the reader


async def test_a_thousand_idle_connections(node, tools):
    """1,000 connections that send nothing, plus 100 that go idle after one request: a
    normal request is still served, and the timeouts close every idle one."""
    assert tools.raise_nofile(IDLE_CONNECTIONS + 500) >= IDLE_CONNECTIONS + 200
    idle, kept = [], []
    await healthy(tools, node.port)
    before = rss(node.proc.pid)
    with trio.fail_after(GUARD * 2):
        for _ in range(IDLE_CONNECTIONS):
            idle.append(await tools.Raw.connect(node.port))
        for _ in range(100):
            c = await tools.Raw.connect(node.port)
            await c.send(req("GET", "/healthcheck"))
            assert (await c.response())[0] == 200
            kept.append(c)
        await healthy(tools, node.port)
        per_connection = (rss(node.proc.pid) - before) / (IDLE_CONNECTIONS + 100)
        assert per_connection < 64 * 1024          # a 16 KiB head buffer, h11, one task
        closed = 0

        async def wait_closed(c) -> None:
            nonlocal closed
            if await c.closed():
                closed += 1

        async with trio.open_nursery() as nursery:
            for c in idle + kept:
                nursery.start_soon(wait_closed, c)
        for c in idle + kept:
            await c.aclose()
    assert closed == IDLE_CONNECTIONS + 100
    tools.record("idle_connections_held_and_closed", IDLE_CONNECTIONS + 100)
    tools.record("node_rss_per_idle_connection_bytes", int(per_connection))
    await healthy(tools, node.port)


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- malformed heads ------------------------------------------------------------------------

async def test_oversized_heads_are_431(node, tools):
    big = req("GET", "/healthcheck", "X-Big: " + "v" * 70_000)
    assert (await exchange(tools, node.port, big))[0] == 431
    assert (await exchange(tools, node.port, big, split=997))[0] == 431
    many = req("GET", "/healthcheck", *(f"X-H{i}: {'v' * 100}" for i in range(800)))
    assert (await exchange(tools, node.port, many))[0] == 431
    assert (await exchange(tools, node.port, many, split=1000))[0] == 431
    await healthy(tools, node.port)


SMUGGLING = {
    "te_and_cl": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl_and_te": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 6\r\n\r\n0\r\n\r\n",
    "duplicate_cl": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                    b"Content-Length: 6\r\n\r\n{}   ",
    "cl_list": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n{}   ",
    "cl_plus": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n{}   ",
    "cl_hex": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n{}   ",
    "cl_negative": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "space_before_colon": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n"
                          b"\r\n{}   ",
    "obs_fold": b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    "obs_fold_te": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n"
                   b"Content-Length: 6\r\n\r\n0\r\n\r\n",
    "chunk_size_hex_prefix": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                             b"chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
    "chunk_size_huge": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                       b"\r\n\r\nffffffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    "bad_chunk_end": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                     b"\r\n\r\n2\r\n{}XX0\r\n\r\n",
    "lf_only_chunk_ext": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                         b"chunked\r\n\r\n2;a\nb\r\n{}\r\n0\r\n\r\n",
    "nul_in_header": b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "no_host": b"GET /healthcheck HTTP/1.1\r\n\r\n",
    "bad_header_name": b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n",
    "two_spaces": b"GET  /healthcheck  HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_version": b"GET /healthcheck HTTP/9\r\nHost: x\r\n\r\n",
}
# What RFC 9112 asks for a transfer coding the server does not implement (the TE.TE
# obfuscations): 501, and the connection closes without reading a body.
UNKNOWN_TE = {
    "te_identity": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
    "te_chunked_identity": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                           b"chunked, identity\r\n\r\n0\r\n\r\n",
    "te_xchunked": b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked"
                   b"\r\n\r\n0\r\n\r\n",
}
SMUGGLED = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("name", sorted(SMUGGLING) + sorted(UNKNOWN_TE))
async def test_smuggling_shapes_get_a_clean_refusal_and_close(node, tools, name):
    data = SMUGGLING.get(name) or UNKNOWN_TE[name]
    with trio.fail_after(GUARD):
        c = await tools.Raw.connect(node.port)
        await c.send(data + SMUGGLED)
        status, headers, _ = await c.response()
        if name in UNKNOWN_TE:
            assert status == 501
        else:
            assert 400 <= status < 500, status
        assert headers.get("connection") == "close"
        assert await c.closed()
        assert b"HTTP/1.1" not in c.buf          # the smuggled request was never answered
        await c.aclose()
    await healthy(tools, node.port)


ABSURD = [
    ("GETT", "/v2/images"), ("get", "/v2/images"), ("BREW", "/v2/images"),
    ("M" * 200, "/v2/images"), ("DELETE", "/v2/images"), ("PATCH", "/v2/schemas/image"),
    ("GET", "*"), ("OPTIONS", "*"), ("GET", "http://evil.example/v2/images"),
    ("CONNECT", "evil.example:443"), ("GET", "/v2/images/" + "../" * 300),
    ("GET", "/v2/images/%00%ff%fe"), ("GET", "/v2/images/%"), ("GET", "/v2/images?limit=%ff"),
    ("GET", "/v2/images?limit=99999999999999999999999"), ("GET", "/v2/images?marker=%00"),
    ("GET", "/v2/images?sort=" + ",".join(["name:asc"] * 500)),
    ("GET", "/v2/images?" + "&".join(f"p{i}=v" for i in range(600))),
    ("GET", "/v2/images/" + "a" * 4000), ("PUT", "/v2/images/x/tags/" + "%F0%9F" * 50),
    ("GET", "//v2//images//"), ("GET", "/v2.999/images"), ("GET", "/\u00e9".encode().decode(
        "latin-1")),
]


# Glance's router answers 501 to a method it does not know (RFC 9110 15.6.2 too).
UNKNOWN_METHODS = {"GETT", "get", "BREW", "M" * 200, "CONNECT"}


async def test_absurd_methods_and_targets_are_answered_cleanly(node, tools):
    """Never a 5xx (except Glance's 501 for a method it does not know)."""
    for method, target in ABSURD:
        status, _ = await exchange(tools, node.port, req(method, target))
        allowed = status < 500 or (status == 501 and method in UNKNOWN_METHODS)
        assert allowed, (method, target[:60], status)
    status, _ = await exchange(tools, node.port, req("GET", "/" + "a" * 20_000))
    assert status == 414
    status, _ = await exchange(tools, node.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"
                               + b"\x00" * 100)           # a TLS hello
    assert status == 400
    await healthy(tools, node.port)


# -- hostile JSON ---------------------------------------------------------------------------

JSON_BODIES = {
    "invalid_utf8": b'{"name": "\xff\xfe"}',
    "overlong_utf8": b'{"name": "\xc0\xaf"}',
    "raw_control_char": b'{"name": "a\x01b"}',
    "raw_newline_in_string": b'{"name": "a\nb"}',
    "lone_surrogate": b'{"name": "\\ud800"}',
    "surrogate_key": b'{"\\udfff": "x"}',
    "nul_escape": b'{"name": "\\u0000"}',
    "nul_key": b'{"\\u0000": "x"}',
    "deep_list": b"[" * 100_000 + b"]" * 100_000,
    "deep_dict": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep_value": b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "huge_number": b'{"min_disk": 1' + b"0" * 5000 + b"}",
    "nan": b'{"min_disk": NaN}',
    "infinity": b'{"min_ram": Infinity}',
    "float": b'{"min_ram": 1e400}',
    "duplicate_keys": b'{"name": "a", "name": "b", "id": "x", "id": "y"}',
    "not_json": b"\x00\x01\x02",
    "empty": b"",
    "scalar": b"42",
    "bom": b'\xef\xbb\xbf{"name": "a"}',
    "utf16": '{"name": "a"}'.encode("utf-16"),
    "long_string": b'{"name": "' + b"a" * 900_000 + b'"}',
    "many_keys": json.dumps({f"k{i}": "v" for i in range(20_000)}).encode(),
}


@pytest.mark.parametrize("name", sorted(JSON_BODIES))
async def test_hostile_json_is_a_clean_4xx(node, tools, name):
    body = JSON_BODIES[name]
    status, _ = await exchange(tools, node.port, req(
        "POST", "/v2/images", "Content-Type: application/json",
        f"Content-Length: {len(body)}", body=body))
    assert 400 <= status < 500 or status == 201, status
    image_id = await create_image(tools, node.port)
    status, _ = await exchange(tools, node.port, req(
        "PATCH", f"/v2/images/{image_id}",
        "Content-Type: application/openstack-images-v2.1-json-patch",
        f"Content-Length: {len(body)}", body=body))
    assert 400 <= status < 500 or status == 200, status
    patch = b'[{"op": "add", "path": "/x", "value": ' + (body or b"1") + b"}]"
    status, _ = await exchange(tools, node.port, req(
        "PATCH", f"/v2/images/{image_id}",
        "Content-Type: application/openstack-images-v2.1-json-patch",
        f"Content-Length: {len(patch)}", body=patch))
    assert 400 <= status < 500 or status == 200, status
    await healthy(tools, node.port)


async def test_ten_megabytes_of_json_is_413(node, tools):
    body = b'{"name": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    status, _ = await exchange(tools, node.port, req(
        "POST", "/v2/images", "Content-Type: application/json", body=body))
    assert status == 413
    status, _ = await exchange(tools, node.port, req(
        "POST", "/v2/images", "Content-Type: application/json", "Transfer-Encoding: chunked")
        + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    assert status == 413
    await healthy(tools, node.port)
