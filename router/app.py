"""create_app(config): the one place the router is assembled, for `python -m router` and
tests alike. Shards, tokenizer and the health task open in cleanup_ctx, in that order,
so each closes only if it opened and after everything that depends on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from router.admission import Admission
from router.chat_template import ChatTemplate
from router.config import RouterConfig, resolve_limits
from router.docs import pages, playground
from router.drain import Drain, drain_middleware
from router.inference import Inference
from router.metrics import Metrics
from router.middlewares import (add_request_id_header, auth_middleware, error_middleware, request_id_middleware,
                                tracing_middleware)
from router.openai import handlers as openai
from router.openai.responses import handlers as responses
from router.openai.responses.store import RESPONSE_STORE, ResponseStore
from router.resume import RESUMABLE_STREAMS, ResumableStreams, resume_stream
from router.route_table import Route, RouteTable
from router.shards import ShardPool
from router.state import CHAT_TEMPLATE, CONFIG, DRAIN, POOL, ROUTE_TABLE, SHARD_INFO, STATE, TOKENIZER, RouterState
from router.tgi import handlers as tgi
from router.tokenizer import PromptTokenizer
from router.tracing import Tracing
from router.validation import Validator

log = logging.getLogger(__name__)


async def root(request: web.Request) -> web.StreamResponse:
    """GET /: TGI's health check, unless the client asks for HTML (a browser)."""
    if "text/html" in request.headers.get("Accept", ""):
        return await playground.landing_page(request)
    return await tgi.health(request)


# Every route, once, with its traits (route_table.Route).
ROUTES = RouteTable([
    # TGI's routes
    Route("POST", "/generate", tgi.generate, needs_key=True),
    Route("POST", "/generate_stream", tgi.generate_stream, needs_key=True),
    # sluice's: a dropped stream, resumed (router/resume.py)
    Route("GET", "/stream/{token}", resume_stream, needs_key=True, open_while_draining=True),
    Route("POST", "/", tgi.compat_generate, needs_key=True),
    Route("POST", "/tokenize", tgi.tokenize, needs_key=True),
    Route("POST", "/chat_tokenize", openai.chat_tokenize, needs_key=True),  # TGI's, with a chat body
    Route("GET", "/", root),  # the health check; browsers get a link to the playground
    Route("GET", "/health", tgi.health),
    Route("GET", "/ping", tgi.health),
    Route("GET", "/info", tgi.info, open_while_draining=True),
    Route("GET", "/metrics", tgi.metrics, open_while_draining=True),
    # OpenAI's routes
    Route("POST", "/v1/chat/completions", openai.chat_completions, needs_key=True, openai=True),
    Route("POST", "/v1/completions", openai.completions, needs_key=True, openai=True),
    Route("GET", "/v1/models", openai.models, openai=True),
    Route("GET", "/v1/models/{model_id:.+}", openai.model, openai=True),
    Route("POST", "/v1/responses", responses.create_response, needs_key=True, openai=True),
    # Reading or deleting a stored response costs nothing, and only this process has it.
    Route("GET", "/v1/responses/{response_id}", responses.retrieve_response, needs_key=True, openai=True,
          open_while_draining=True),
    Route("DELETE", "/v1/responses/{response_id}", responses.delete_response, needs_key=True, openai=True,
          open_while_draining=True),
    Route("GET", "/v1/responses/{response_id}/input_items", responses.list_input_items, needs_key=True,
          openai=True, open_while_draining=True),
    # Pages
    Route("GET", "/playground", playground.playground),
    Route("GET", "/static/{name}", playground.static_asset),
    Route("GET", "/api-doc/openapi.json", pages.openapi_json, open_while_draining=True),
    Route("GET", "/docs", pages.docs_page, open_while_draining=True),
    Route("GET", "/docs/{name}", pages.docs_asset, open_while_draining=True),
])


TRACING = web.AppKey("tracing", Tracing)


def create_app(config: RouterConfig) -> web.Application:
    drain = Drain()
    tracing = Tracing(config.otlp_endpoint)
    app = web.Application(
        client_max_size=config.payload_limit,
        middlewares=[request_id_middleware, tracing_middleware(tracing), error_middleware(ROUTES),
                     drain_middleware(drain, ROUTES), auth_middleware(config.api_key, ROUTES)],
    )
    app[TRACING] = tracing
    app[CONFIG] = config
    app[DRAIN] = drain
    app[ROUTE_TABLE] = ROUTES
    app[RESPONSE_STORE] = ResponseStore.from_config(config)
    # Active streams plus finished ones kept for their window.
    app[RESUMABLE_STREAMS] = ResumableStreams(config.stream_resume_window_s, 2 * config.max_concurrent_requests)
    app.cleanup_ctx.extend([_shards_ctx, _tokenizer_ctx, _state_ctx])
    app.on_response_prepare.append(add_request_id_header)
    ROUTES.add_to(app)
    return app


async def _shards_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    pool = ShardPool(config.shard_uris, config.health_check_interval_s)
    try:
        app[SHARD_INFO] = await pool.connect(config.shard_connect_timeout_s)
        app[POOL] = pool
        log.info("shards ready: %s", app[SHARD_INFO])
        yield
    finally:
        await pool.close()


async def _tokenizer_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    files = await app[POOL].tokenizer_files(config.shard_connect_timeout_s)
    tokenizer = await PromptTokenizer.load(files, config.validation_workers)
    app[TOKENIZER] = tokenizer
    app[CHAT_TEMPLATE] = await ChatTemplate.load(files)
    try:
        yield
    finally:
        tokenizer.close()


async def _state_ctx(app: web.Application) -> AsyncIterator[None]:
    config, pool, tokenizer = app[CONFIG], app[POOL], app[TOKENIZER]
    limits = resolve_limits(config, app[SHARD_INFO].max_total_tokens)
    admission = Admission(config.max_concurrent_requests, config.priority_reserve_share)
    metrics = Metrics(limits, num_in_flight=lambda: admission.num_in_flight,
                      shard_states=pool.states)
    app[STATE] = RouterState(
        config=config, info=app[SHARD_INFO], limits=limits, pool=pool, tokenizer=tokenizer,
        admission=admission, metrics=metrics, validator=Validator(limits, tokenizer),
        inference=Inference(pool, metrics, app[DRAIN], app[TRACING].tracer),
        chat_template=app[CHAT_TEMPLATE], tracer=app[TRACING].tracer)
    health_task = asyncio.create_task(pool.run_health_checks())
    try:
        yield
    finally:
        health_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await health_task
        await asyncio.to_thread(app[TRACING].shutdown)   # the last spans, exported
