"""The playground (GET /playground): one prompt sent to /generate_stream and /generate at
once, the two answers side by side. The page is static HTML with same-origin CSS and JS
under router/docs/static/: no build step, nothing fetched from other hosts.

GET / stays the health check for API clients; only a browser (which asks for text/html)
gets a small landing page linking to the playground."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from aiohttp import web

from router.state import CONFIG, STATE

STATIC_DIR = Path(__file__).parent / "static"
_ASSETS = frozenset({"playground.css", "playground.js"})


async def static_asset(request: web.Request) -> web.FileResponse:
    """Only the page's own files, by name. aiohttp's static route answers a missing or
    escaping path with an empty 404 of its own, past the JSON error middleware."""
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})


async def playground(request: web.Request) -> web.Response:
    """Served without the API key (only generation routes need it); the page is told
    whether one is needed so it can ask for it before the first 401."""
    needs_key = "required" if request.app[CONFIG].api_key else "none"
    page = _template("playground.html").replace("{{api_key}}", needs_key)
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def landing_page(request: web.Request) -> web.Response:
    """GET / for a browser (app.root picks it for clients that ask for text/html)."""
    state = request.app[STATE]
    healthy = state.pool.any_healthy
    page = (_template("index.html")
            .replace("{{model_id}}", html.escape(state.config.model_id or state.info.model_id))
            .replace("{{health}}", "ready" if healthy else "no healthy shard"))
    # Same status as the health check, so a browser and a probe never disagree.
    return web.Response(text=page, content_type="text/html", status=200 if healthy else 503,
                        headers={"Vary": "Accept", "Cache-Control": "no-cache"})


@cache
def _template(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")
