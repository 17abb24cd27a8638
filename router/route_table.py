"""Each route with its traits, declared once (app.py's ROUTES): whether the API key guards
it, whether its errors take OpenAI's shape, whether it stays open while draining. The
middlewares and the OpenAPI document ask this table instead of keeping lists of paths."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

# For paths that match no route (a 404, a 405): their errors take the shape of the
# dialect the path belongs to.
OPENAI_PREFIX = "/v1/"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    needs_key: bool = False  # generation work: guarded by --api-key
    openai: bool = False  # errors in OpenAI's body (errors.RouterError.to_openai_dict)
    open_while_draining: bool = False  # scrapes watch a drain, and reading docs costs nothing


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        self._by_key = {(route.method, route.path): route for route in self.routes}
        if len(self._by_key) != len(self.routes):
            raise ValueError("a route is declared twice")

    def add_to(self, app: web.Application) -> None:
        for route in self.routes:
            if route.method == "GET":
                app.router.add_get(route.path, route.handler)  # with HEAD, as web.get does
            else:
                app.router.add_route(route.method, route.path, route.handler)

    def find(self, request: web.Request) -> Route | None:
        """The route `request` matched, None for a 404 or 405."""
        match_info = request.match_info
        if match_info.http_exception is not None:
            return None
        method = "GET" if request.method == "HEAD" else request.method
        return self._by_key.get((method, match_info.route.resource.canonical))

    def speaks_openai(self, request: web.Request) -> bool:
        route = self.find(request)
        return route.openai if route is not None else request.path.startswith(OPENAI_PREFIX)
