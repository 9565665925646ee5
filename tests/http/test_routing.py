# The routing table: parameters, 404 / 405 + Allow / 501, body_reject, HEAD on GET routes.
import pytest

from tessera.http.errors import HTTPError
from tessera.http.message import Headers, Request, Response
from tessera.http.routing import Route, Router


class FakeBody:
    def __init__(self, present):
        self.present = present
        self.length = 3 if present else None


def handler(name):
    async def h(request):
        return Response(200, [], name.encode())
    return h


ROUTES = [
    Route("GET", "/v2/images", handler("list"), body_reject=True),
    Route("POST", "/v2/images", handler("create")),
    Route("GET", "/v2/images/{image_id}", handler("show"), body_reject=True),
    Route("PATCH", "/v2/images/{image_id}", handler("update")),
    Route("DELETE", "/v2/images/{image_id}", handler("delete"), body_reject=True),
    Route("PUT", "/v2/images/{image_id}/members/{member_id}", handler("member")),
    Route("POST", "/v2/images/{image_id}/actions/deactivate", handler("deactivate")),
    Route("GET", "/v2/info/import", handler("info")),
]


def request(method, path, body=False):
    return Request(method, path, path, [], Headers(()), FakeBody(body), "req-x")


def test_match_with_parameters():
    router = Router(ROUTES)
    route, params = router.match("PUT", "/v2/images/abc/members/p1")
    assert route.pattern == "/v2/images/{image_id}/members/{member_id}"
    assert params == {"image_id": "abc", "member_id": "p1"}
    route, params = router.match("GET", "/v2/info/import")
    assert route.pattern == "/v2/info/import" and params == {}


def test_unknown_path_is_404():
    router = Router(ROUTES)
    for path in ("/v2/nothing", "/v2/images/", "/v2/images/a/b", "", "v2/images"):
        with pytest.raises(HTTPError) as info:
            router.match("GET", path)
        assert info.value.status == 404


def test_known_path_other_method_is_405_with_glance_allow():
    router = Router(ROUTES)
    with pytest.raises(HTTPError) as info:
        router.match("PUT", "/v2/images/abc")
    assert info.value.status == 405
    assert info.value.headers == (("Allow", "GET, PATCH, DELETE"),)
    assert info.value.method == "PUT"
    with pytest.raises(HTTPError) as info:
        router.match("DELETE", "/v2/images")
    assert info.value.headers == (("Allow", "GET, POST"),)


def test_unknown_method_is_501():
    with pytest.raises(HTTPError) as info:
        Router(ROUTES).match("BREW", "/v2/images")
    assert info.value.status == 501


def test_head_runs_the_get_handler_unless_disabled():
    route, _ = Router(ROUTES).match("HEAD", "/v2/images/x")
    assert route.method == "GET"
    with pytest.raises(HTTPError) as info:
        Router(ROUTES, head_as_get=False).match("HEAD", "/v2/images/x")
    assert info.value.status == 405


async def test_dispatch_sets_params_and_rejects_bodies():
    router = Router(ROUTES)
    req = request("GET", "/v2/images/i1")
    resp = await router(req)
    assert resp.body == b"show" and req.path_params == {"image_id": "i1"}
    with pytest.raises(HTTPError) as info:
        await router(request("GET", "/v2/images/i1", body=True))
    assert info.value.status == 400
    assert info.value.message == "A body is not expected with this request."
    assert (await router(request("PATCH", "/v2/images/i1", body=True))).body == b"update"


def test_duplicate_routes_are_refused():
    with pytest.raises(ValueError):
        Router([Route("GET", "/a", handler("a")), Route("GET", "/a", handler("b"))])


def test_a_literal_dead_end_backtracks_to_the_parameter():
    # "import" is a literal under /v2/images (for /v2/images/import/status only): an image
    # whose id is "import" must still reach the {image_id} routes.
    routes = ROUTES + [Route("GET", "/v2/images/import/status", handler("status"))]
    router = Router(routes)
    route, params = router.match("GET", "/v2/images/import")       # literal leads nowhere
    assert route.pattern == "/v2/images/{image_id}" and params == {"image_id": "import"}
    route, params = router.match("GET", "/v2/images/import/status")
    assert route.pattern == "/v2/images/import/status" and params == {}
    route, params = router.match("POST", "/v2/images/import/actions/deactivate")
    assert route.pattern == "/v2/images/{image_id}/actions/deactivate"
    assert params == {"image_id": "import"}
    with pytest.raises(HTTPError) as exc:
        router.match("GET", "/v2/images//members")
    assert exc.value.status == 404
