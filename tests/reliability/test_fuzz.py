# Fuzzing the whole API (hypothesis): random methods, targets built from the route table with
# hostile segments and queries, random headers (content types, sizes, ranges, identities)
# and JSON bodies (valid shapes with wrong values, deep nesting, lone surrogates, patch ops
# with odd pointers) against the in-process application; then random request lines, header
# blocks and bodies as raw bytes against a server on a real socket. The property: never a 5xx
# (except Glance's 501 for an unknown method or transfer coding), never a hang, and the
# server still answers a normal request afterwards.
# The import route is left out on purpose: web-download would send traffic off this host.
import json
import random
import string

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.engine.config import EngineConfig
from tessera.engine.engine import Engine
from tessera.http.api import build_app
from tessera.http.config import ServerConfig
from tessera.http.server import serve

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}
EXAMPLES_IN_PROCESS = 1000
EXAMPLES_SOCKET = 400
HANG = 10.0
FUZZ_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow,
                                            HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much])

TEMPLATES = [
    "/v2/images", "/v2/images/{id}", "/v2/images/{id}/file", "/v2/images/{id}/stage",
    "/v2/images/{id}/tags/{x}", "/v2/images/{id}/members", "/v2/images/{id}/members/{x}",
    "/v2/images/{id}/actions/deactivate", "/v2/images/{id}/actions/reactivate",
    "/v2/images/{id}/tasks", "/v2/tasks", "/v2/tasks/{x}", "/v2/schemas/{x}",
    "/v2/schemas/image", "/v2/info/usage", "/v2/info/import", "/v2/info/stores",
    "/v2/info/stores/detail", "/v2/metadefs/namespaces", "/v2/metadefs/namespaces/{x}",
    "/v2/metadefs/namespaces/{x}/objects/{x}", "/v2/metadefs/namespaces/{x}/properties/{x}",
    "/v2/metadefs/namespaces/{x}/tags/{x}", "/v2/metadefs/namespaces/{x}/resource_types",
    "/v2/metadefs/resource_types", "/v2/schemas/metadefs/{x}", "/versions", "/", "/v2.{x}/images",
    "/healthcheck", "/{x}", "/v2/{x}/{x}",
]
CONTENT_TYPES = [
    "application/json", "application/octet-stream",
    "application/openstack-images-v2.1-json-patch", "application/openstack-images-v2.0-json-patch",
    "text/plain", "application/json; charset=latin-1", "", "*/*", "application/json;;;",
    "multipart/form-data; boundary=x",
]
ACCEPTS = ["application/json", "text/html", "*/*", "", "text/plain;q=0",
           "application/vnd.openstack.images-v2.1", "application/vnd.openstack.images-v9"]

segment = st.one_of(
    st.text(min_size=0, max_size=40),
    st.sampled_from(["..", ".", "%00", "%ff", "%", "%2F", "a" * 300, " ", "\u00e9", "null",
                     "-1", "0", "99999999999999999999", "%ED%A0%80", "deleted"]),
    st.uuids().map(str),
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=False), st.text(max_size=30),
                        st.sampled_from(["\ud800", "os_glance_x", "public", "shared", "qcow2",
                                         "/name", "/tags/-", "/locations/0", "active"]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(
        ["name", "id", "visibility", "disk_format", "container_format", "min_disk", "tags",
         "protected", "os_hidden", "owner", "member", "status", "op", "path", "value",
         "namespace", "properties", "objects", "type", "size", "checksum", "locations"])),
        inner, max_size=5)), max_leaves=12)
patch_op = st.fixed_dictionaries({"op": st.sampled_from(["add", "replace", "remove", "move",
                                                         "test", "copy", "x"]),
                                  "path": st.one_of(st.text(max_size=20), st.sampled_from(
                                      ["/name", "/tags", "/tags/-", "/x", "/min_ram",
                                       "/visibility", "/locations", "/locations/-", "/owner",
                                       "/status", "/os_hidden", "/~1", "/a~0b", "",
                                       "/properties/x", "/protected"]))},
                                 optional={"value": json_value})


@st.composite
def body_of(draw):
    kind = draw(st.sampled_from(["none", "json", "patch", "bytes", "deep", "bad"]))
    if kind == "none":
        return b""
    if kind == "json":
        return json.dumps(draw(json_value)).encode("utf-8", "surrogatepass")
    if kind == "patch":
        return json.dumps(draw(st.lists(patch_op, max_size=4))).encode("utf-8",
                                                                        "surrogatepass")
    if kind == "deep":
        depth = draw(st.integers(10, 3000))
        return b"[" * depth + b"]" * depth
    if kind == "bad":
        return draw(st.sampled_from([b"{", b'{"a": }', b"\xff\xfe", b'{"a": "\x01"}',
                                     b'{"name": "\\udc00"}', b"[1,]", b"nul\x00"]))
    return draw(st.binary(max_size=3000))


@st.composite
def api_request(draw, ids):
    template = draw(st.sampled_from(TEMPLATES))
    parts = []
    for piece in template.split("/"):
        if piece == "{id}":
            piece = draw(st.one_of(st.sampled_from(ids), segment))
        elif "{x}" in piece:
            piece = piece.replace("{x}", draw(segment))
        parts.append(piece)
    path = "/".join(parts)
    query = draw(st.lists(st.tuples(st.one_of(st.sampled_from(
        ["limit", "marker", "sort", "sort_key", "sort_dir", "name", "status", "visibility",
         "member_status", "tag", "size_min", "created_at", "os_hidden", "resource_types"]),
        st.text(max_size=8)), segment), max_size=4))
    method = draw(st.one_of(st.sampled_from(sorted(KNOWN_METHODS)),
                            st.text(alphabet=string.ascii_letters, min_size=1, max_size=12)))
    headers = {"Content-Type": draw(st.sampled_from(CONTENT_TYPES)),
               "Accept": draw(st.sampled_from(ACCEPTS))}
    if draw(st.booleans()):
        headers["x-openstack-image-size"] = draw(st.sampled_from(
            ["0", "-1", "1", "abc", "99999999999999999999999", "10"]))
    if draw(st.booleans()):
        headers["Range"] = draw(st.sampled_from(
            ["bytes=0-0", "bytes=-1", "bytes=5-2", "bytes=0-", "bytes=a-b", "bytes=0-1,2-3",
             "items=1-2", "bytes=99999999999999999999-"]))
    if draw(st.booleans()):
        headers["Content-Range"] = draw(st.sampled_from(["bytes 0-1/2", "bytes */*", "x"]))
    return method, path, query, headers, draw(body_of()), draw(st.booleans())



async def image_pool(api) -> list[str]:
    """A few images in different states for the fuzzer to hit."""
    queued = await api.create(name="queued")
    active = await api.create(name="active", visibility="shared")
    await api.upload(active["id"], random.Random(1).randbytes(200_000))
    await api.post(f"/v2/images/{active['id']}/members", {"member": "p" * 32})
    staged = await api.create(name="staged")
    await api.put(f"/v2/images/{staged['id']}/stage", b"x" * 1000,
                  headers={"Content-Type": "application/octet-stream"})
    return [queued["id"], active["id"], staged["id"]]


def allowed(status: int, method: str, headers: dict) -> bool:
    return status < 500 or (status == 501 and method not in KNOWN_METHODS)


async def test_fuzz_the_api_in_process(make_api, tools):
    api = await make_api()
    ids = await image_pool(api)
    tried = 0
    from urllib.parse import quote

    @settings(max_examples=EXAMPLES_IN_PROCESS, **FUZZ_SETTINGS)
    @given(api_request(ids))
    def one(request) -> None:
        nonlocal tried
        method, path, query, headers, body, chunked = request
        if path.rstrip("/").endswith("/import"):
            return
        target = quote(path, safe="/%:@") + ("?" + "&".join(
            f"{quote(k, safe='%')}={quote(v, safe='%')}" for k, v in query) if query else "")
        tried += 1

        async def run() -> None:
            with trio.fail_after(HANG):
                r = await api.request(method, target, body, headers=headers, chunked=chunked)
            assert allowed(r.status, method, headers), (method, target, headers, body[:200],
                                                        r.status, r.body[:500])

        trio_token.run(run)

    # hypothesis drives a synchronous function; each example runs on this test's trio loop
    # through a worker thread (trio.from_thread), so the engine stays on one loop.
    trio_token = _LoopCaller(trio.lowlevel.current_trio_token())
    await trio.to_thread.run_sync(one)
    health = await api.get("/healthcheck")
    assert health.status == 200
    assert tried > EXAMPLES_IN_PROCESS // 2
    tools.record("fuzz_in_process_requests", tried)


class _LoopCaller:
    def __init__(self, token) -> None:
        self.token = token

    def run(self, fn) -> None:
        trio.from_thread.run(fn, trio_token=self.token)


# -- raw bytes on a real socket -------------------------------------------------------------

token_chars = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~",
                      min_size=1, max_size=20)
raw_header = st.one_of(
    st.tuples(token_chars, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255),
                                   max_size=40)).map(
        lambda kv: f"{kv[0]}: {kv[1]}".encode("latin-1")),
    st.sampled_from([b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 0x10",
                     b"Content-Length: 99999999999999999999", b"Transfer-Encoding: chunked",
                     b"Transfer-Encoding: gzip", b"Expect: 100-continue", b"Connection: close",
                     b"Connection: keep-alive, upgrade", b"Upgrade: h2c", b"Host: a", b"Host:",
                     b" folded", b"\tfolded", b"NoColon", b"X: \x00", b"X-Roles: admin",
                     b"Content-Type: application/json"]),
    st.binary(max_size=30),
)


@st.composite
def raw_request(draw):
    method = draw(st.one_of(st.sampled_from([b"GET", b"POST", b"PUT", b"PATCH", b"DELETE",
                                             b"HEAD"]), st.binary(min_size=0, max_size=10)))
    target = draw(st.one_of(
        st.sampled_from([b"/v2/images", b"/healthcheck", b"/v2/images/x", b"*", b"/", b""]),
        st.binary(max_size=60)))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"http/1.1", b""]))
    line = draw(st.sampled_from([b"%s %s %s", b"%s  %s %s", b"%s %s\t%s", b"%s%s %s"])) % (
        method, target, version)
    headers = draw(st.lists(raw_header, max_size=6))
    if draw(st.booleans()):
        headers.insert(0, b"Host: 127.0.0.1")
    eol = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    body = draw(st.binary(max_size=200))
    return line + eol + eol.join(headers) + eol + eol + body


async def test_fuzz_raw_requests_on_a_socket(tmp_path, tools):
    cfg = EngineConfig(data_dir=tmp_path / "data", durable=False)
    engine = await Engine.open(cfg)
    scfg = ServerConfig(host="127.0.0.1", port=0, header_timeout=1.0, idle_timeout=1.0,
                        body_timeout=1.0)
    tried = 0
    try:
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(
                lambda task_status: serve(build_app(engine, scfg), scfg,
                                          task_status=task_status))
            token = trio.lowlevel.current_trio_token()

            async def send(data: bytes) -> bytes:
                with trio.fail_after(HANG):
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    try:
                        try:
                            await stream.send_all(data)
                            await stream.send_eof()
                        except (trio.BrokenResourceError, ConnectionError):
                            pass
                        out = b""
                        try:
                            while True:
                                piece = await stream.receive_some(65536)
                                if not piece:
                                    break
                                out += piece
                        except (trio.BrokenResourceError, ConnectionError):
                            pass
                        return out
                    finally:
                        await stream.aclose()

            @settings(max_examples=EXAMPLES_SOCKET, **FUZZ_SETTINGS)
            @given(raw_request())
            def one(data: bytes) -> None:
                nonlocal tried
                tried += 1
                out = trio.from_thread.run(send, data, trio_token=token)
                for status in _statuses(out):
                    te_or_method = b"transfer-encoding" in data.lower() or \
                        data.split(b" ", 1)[0] not in {m.encode() for m in KNOWN_METHODS}
                    assert status < 500 or (status == 501 and te_or_method), (data, out[:300])

            await trio.to_thread.run_sync(one)
            out = await send(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200 ")
            nursery.cancel_scope.cancel()
    finally:
        await engine.aclose()
    tools.record("fuzz_socket_requests", tried)


def _statuses(out: bytes) -> list[int]:
    """Status codes of the responses in a raw byte stream (heads only)."""
    found = []
    for part in out.split(b"HTTP/1.1 ")[1:]:
        code = part[:3]
        if code.isdigit():
            found.append(int(code))
    return found
