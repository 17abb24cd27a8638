"""create_app(config): the one place the router is assembled, for `python -m router` and
tests alike. Shards, tokenizer and the health task open in cleanup_ctx, in that order,
so each closes only if it opened and after everything that depends on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from router import docs, handlers, openai_handlers, playground
from router.admission import Admission
from router.chat_template import ChatTemplate
from router.config import RouterConfig, resolve_limits
from router.drain import Drain, drain_middleware
from router.inference import Inference
from router.metrics import Metrics
from router.middlewares import add_request_id_header, auth_middleware, error_middleware, request_id_middleware
from router.shards import ShardPool
from router.state import CONFIG, DRAIN, POOL, SHARD_INFO, STATE, TOKENIZER, RouterState
from router.tokenizer import PromptTokenizer
from router.validation import Validator

log = logging.getLogger(__name__)


def create_app(config: RouterConfig) -> web.Application:
    drain = Drain()
    app = web.Application(
        client_max_size=config.payload_limit,
        middlewares=[request_id_middleware, error_middleware, drain_middleware(drain),
                     auth_middleware(config.api_key)],
    )
    app[CONFIG] = config
    app[DRAIN] = drain
    app.cleanup_ctx.extend([_shards_ctx, _tokenizer_ctx, _state_ctx])
    app.on_response_prepare.append(add_request_id_header)
    app.router.add_routes([
        web.post("/generate", handlers.generate),
        web.post("/generate_stream", handlers.generate_stream),
        web.post("/", handlers.compat_generate),
        web.post("/tokenize", handlers.tokenize),
        web.get("/", playground.root),  # browsers get a link to the playground
        web.get("/health", handlers.health),
        web.get("/ping", handlers.health),
        web.get("/info", handlers.info),
        web.get("/metrics", handlers.metrics),
        web.post("/v1/chat/completions", openai_handlers.chat_completions),
        web.post("/v1/completions", openai_handlers.completions),
        web.get("/v1/models", openai_handlers.models),
        *playground.routes(),
        *docs.routes(),
    ])
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
    tokenizer = await PromptTokenizer.load(app[SHARD_INFO].tokenizer_path, app[CONFIG].validation_workers)
    app[TOKENIZER] = tokenizer
    try:
        yield
    finally:
        tokenizer.close()


async def _state_ctx(app: web.Application) -> AsyncIterator[None]:
    config, pool, tokenizer = app[CONFIG], app[POOL], app[TOKENIZER]
    limits = resolve_limits(config, app[SHARD_INFO].max_total_tokens)
    admission = Admission(config.max_concurrent_requests)
    metrics = Metrics(limits, num_in_flight=lambda: admission.num_in_flight,
                      shard_states=pool.states)
    app[STATE] = RouterState(
        config=config, info=app[SHARD_INFO], limits=limits, pool=pool, tokenizer=tokenizer,
        admission=admission, metrics=metrics, validator=Validator(limits, tokenizer),
        inference=Inference(pool, metrics, app[DRAIN]),
        chat_template=await ChatTemplate.load(app[SHARD_INFO].tokenizer_path))
    health_task = asyncio.create_task(pool.run_health_checks())
    try:
        yield
    finally:
        health_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await health_task
