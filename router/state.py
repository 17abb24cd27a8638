"""Typed keys for everything the app and its requests carry, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from opentelemetry.trace import NoOpTracer, Tracer

from router.admission import Admission
from router.chat_template import ChatTemplate
from router.config import Limits, RouterConfig
from router.drain import Drain
from router.inference import Inference
from router.metrics import Metrics
from router.route_table import RouteTable
from router.shards import ShardPool
from router.tokenizer import PromptTokenizer
from router.validation import Validator
from router.wire import ShardInfo


@dataclass(frozen=True, slots=True)
class RouterState:
    """What handlers need once startup has finished."""

    config: RouterConfig
    info: ShardInfo
    limits: Limits
    pool: ShardPool
    tokenizer: PromptTokenizer
    admission: Admission
    metrics: Metrics
    validator: Validator
    inference: Inference
    chat_template: ChatTemplate
    tracer: Tracer = NoOpTracer()

    @property
    def model_id(self) -> str:
        """The served model's name, as /info and /v1/models report it."""
        return self.config.model_id or self.info.model_id


CONFIG = web.AppKey("config", RouterConfig)
POOL = web.AppKey("pool", ShardPool)
SHARD_INFO = web.AppKey("shard_info", ShardInfo)
TOKENIZER = web.AppKey("tokenizer", PromptTokenizer)
CHAT_TEMPLATE = web.AppKey("chat_template", ChatTemplate)
STATE = web.AppKey("state", RouterState)
DRAIN = web.AppKey("drain", Drain)
ROUTE_TABLE = web.AppKey("route_table", RouteTable)

# Per-request keys (set by middlewares.request_id_middleware).
REQUEST_ID = web.RequestKey("request_id", str)
