# The routing table: (method, path pattern) -> handler, as Glance's routes mapper answers it.
# Invariants: matching is a walk of a segment tree (literal segments before parameters), never
# a scan of every route; routing failures are raised as HTTPError (rendered by the server):
# unknown method 501, unknown path 404, known path with another method 405 + Allow (methods in
# the order the routes were declared, as Glance lists them), a body on a body_reject route 400.
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from tessera.http.errors import HTTPError
from tessera.http.message import Request, Response

Handler = Callable[[Request], Awaitable[Response]]

# Glance's router answers 501 for methods outside this set.
IMPLEMENTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
BODY_NOT_EXPECTED = "A body is not expected with this request."


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str              # e.g. /v2/images/{image_id}/members/{member_id}
    handler: Handler
    body_reject: bool = False


class _Node:
    __slots__ = ("literal", "param", "param_name", "routes", "allow")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.param_name = ""
        self.routes: dict[str, Route] = {}      # method -> route, declaration order kept
        self.allow = ""


class Router:
    """Dispatches a Request to its route's handler; `match` is the pure lookup."""

    def __init__(self, routes: Iterable[Route], *, head_as_get: bool = True) -> None:
        # head_as_get: HEAD on a path with a GET route (and no HEAD route) runs the GET handler;
        # the server sends the headers only. (Glance itself answers such a HEAD with 405.)
        self.head_as_get = head_as_get
        self._root = _Node()
        for route in routes:
            node = self._insert(route.pattern)
            if route.method in node.routes:
                raise ValueError(f"duplicate route {route.method} {route.pattern}")
            node.routes[route.method] = route
            node.allow = ", ".join(node.routes)

    def _insert(self, pattern: str) -> _Node:
        if not pattern.startswith("/"):
            raise ValueError(f"pattern must start with '/': {pattern!r}")
        node = self._root
        for seg in pattern.split("/")[1:]:
            if seg.startswith("{") and seg.endswith("}"):
                name = seg[1:-1]
                if node.param is None:
                    node.param = _Node()
                    node.param_name = name
                elif node.param_name != name:
                    raise ValueError(f"conflicting parameter names at {pattern!r}")
                node = node.param
            else:
                node = node.literal.setdefault(seg, _Node())
        return node

    def _find(self, node: _Node, segs: list[str], i: int, params: dict[str, str]) -> _Node | None:
        if i == len(segs):
            return node if node.routes else None
        seg = segs[i]
        child = node.literal.get(seg)
        if child is not None:
            found = self._find(child, segs, i + 1, params)
            if found is not None:
                return found
        if node.param is not None and seg:
            found = self._find(node.param, segs, i + 1, params)
            if found is not None:
                params[node.param_name] = seg
                return found
        return None

    def _walk(self, segs: list[str]) -> tuple[_Node, dict[str, str]] | None:
        """The search's first path, without recursion: a literal segment where there is
        one, else the parameter. When it ends on routes, the search would answer the same;
        otherwise (None) the full search with backtracking decides."""
        node = self._root
        params: dict[str, str] = {}
        for seg in segs:
            child = node.literal.get(seg)
            if child is None:
                if node.param is None or not seg:
                    return None
                params[node.param_name] = seg
                child = node.param
            node = child
        return (node, params) if node.routes else None

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route and path parameters for a request, or HTTPError 501/404/405."""
        if method not in IMPLEMENTED_METHODS:
            raise HTTPError(501, method=method)
        node = None
        if path.startswith("/"):
            segs = path.split("/")[1:]
            found = self._walk(segs)
            if found is not None:
                node, params = found
            else:
                params = {}
                node = self._find(self._root, segs, 0, params)
        if node is None:
            raise HTTPError(404)
        route = node.routes.get(method)
        if route is None and method == "HEAD" and self.head_as_get:
            route = node.routes.get("GET")
        if route is None:
            raise HTTPError(405, headers=(("Allow", node.allow),), method=method)
        return route, params

    async def __call__(self, request: Request) -> Response:
        route, params = self.match(request.method, request.path)
        request.path_params = params
        if route.body_reject and request.body.present:
            raise HTTPError(400, BODY_NOT_EXPECTED)
        return await route.handler(request)
