"""GET /api-doc/openapi.json (the OpenAPI document, as TGI serves it) and GET /docs, Swagger
UI over that document. Swagger UI's files come from the swagger-ui-bundle package and are
served from here, so the page loads nothing from other hosts."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from router.config import Limits, RouterConfig
from router.docs.openapi import build_document
from router.json_body import dumps
from router.lifecycle import version
from router.route_table import Route
from router.state import ROUTE_TABLE, STATE

_PAGE = Path(__file__).parent / "static" / "docs.html"
# Only what the page uses: the package's own index.html would load petstore.swagger.io.
_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})


async def openapi_json(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(_document(state.config, state.limits, request.app[ROUTE_TABLE].routes),
                             dumps=dumps)


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE.read_text(encoding="utf-8"), content_type="text/html")


async def docs_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise web.HTTPNotFound()
    # The files change only with the package: let browsers keep them for a day.
    return web.FileResponse(Path(swagger_ui_path) / name, headers={"Cache-Control": "public, max-age=86400"})


@cache
def _document(config: RouterConfig, limits: Limits, routes: tuple[Route, ...]) -> dict:
    """Built once per config: all three are frozen, and the document depends on nothing else."""
    return build_document(config, limits, routes, version())
