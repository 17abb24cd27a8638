"""Router settings: CLI flags (TGI's names), each also settable from the environment as
the flag's UPPER_SNAKE name (`--max-concurrent-requests` <- MAX_CONCURRENT_REQUESTS), as TGI
does. The command line wins over the environment, which wins over the default."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router.deadlines import Deadlines


def _flag(default, help: str, type=str, aliases: Sequence[str] = ()):
    return dataclasses.field(default=default, metadata={"help": help, "type": type, "aliases": tuple(aliases)})


@dataclass(frozen=True, slots=True)
class RouterConfig:
    shard_uris: tuple[str, ...] = _flag((), "gRPC address HOST:PORT of a shard; repeat for several "
                                        "(env SHARD_URI: comma-separated)")
    hostname: str = _flag("127.0.0.1", "address to listen on")
    port: int = _flag(8080, "HTTP port", int)
    max_concurrent_requests: int = _flag(
        128, "queued + running requests; the next one gets 429", int, aliases=("--max_concurrent_requests",))
    max_input_tokens: int | None = _flag(None, "max prompt tokens (default: max_total_tokens - 1)", int)
    max_total_tokens: int | None = _flag(None, "max prompt + new tokens (default: the shard's)", int)
    max_best_of: int = _flag(2, "upper bound for best_of", int)
    max_stop_sequences: int = _flag(4, "upper bound for len(stop)", int)
    max_stop_sequence_length: int = _flag(1024, "upper bound for each stop string's length in characters", int)
    max_top_n_tokens: int = _flag(5, "upper bound for top_n_tokens", int)
    max_grammar_length: int = _flag(
        100_000, "upper bound for a grammar's (or response_format's) length in characters; a JSON Schema "
        "counts as its compact JSON text", int)
    max_client_batch_size: int = _flag(
        32, "max choices per OpenAI call: prompts x n (LangChain sends up to 20 prompts; reported in /info)", int)
    payload_limit: int = _flag(2_000_000, "request body limit in bytes (413 above it)", int)
    api_key: str | None = _flag(None, "if set, generation routes need `Authorization: Bearer <key>`")
    shard_connect_timeout_s: float = _flag(120.0, "how long startup waits for every shard's Info", float)
    model_id: str | None = _flag(None, "served model name (default: the shard's model_id)")
    validation_workers: int = _flag(2, "tokenizer threads", int)
    keep_alive_interval_s: float = _flag(15.0, "SSE keep-alive comment after this much silence", float)
    keep_alive_timeout_s: float = _flag(
        5.0, "close a connection idle this long, or whose request headers are not all in this long "
        "after it opened or after its last response", float)
    request_body_timeout_s: float = _flag(30.0, "a request body not all in this long after its headers "
                                          "gets 408", float)
    health_check_interval_s: float = _flag(1.0, "how often each shard's Health is polled", float)
    compute_type: str = _flag("gpu+optimized", "value of the x-compute-type header")
    graceful_shutdown_timeout_s: float = _flag(
        25.0, "on SIGTERM: how long running requests may take to finish before they are ended with an error",
        float)
    responses_store_max_count: int = _flag(
        1000, "finished /v1/responses kept in this process for GET and previous_response_id (least recently "
        "used evicted first); 0 turns the store off", int)
    responses_store_max_bytes: int = _flag(
        64 * 1024 * 1024, "upper bound for the kept responses' total size (their JSON, input items included)", int)
    responses_store_ttl_s: float = _flag(3600.0, "a kept response is dropped this long after it finished", float)
    request_timeout_s: float | None = _flag(
        None, "deadline of a request that sets none (header X-Request-Timeout, parameter request_timeout_s): "
        "past it a stream ends with a deadline_exceeded event (default: none)", float)
    queue_timeout_s: float | None = _flag(
        None, "how long a request that sets none (X-Queue-Timeout, queue_timeout_s) may wait for its first "
        "token before a 429 (default: none)", float)
    priority_reserve_share: float = _flag(
        0.25, "share of --max-concurrent-requests that low-priority requests may not take (X-Priority, "
        "parameters.priority): they are refused first under overload", float)
    stream_resume_window_s: float = _flag(
        0.0, "resumable streams: events carry ids, a dropped client may reconnect to GET /stream/{X-Resume-Token} "
        "with Last-Event-ID within this many seconds, and generation goes on meanwhile (0: off)", float)
    otlp_endpoint: str | None = _flag(
        None, "OTLP/HTTP collector (e.g. http://127.0.0.1:4318): export each request's spans there, "
        "W3C traceparent honoured (TGI's flag; default: off)")
    max_request_timeout_s: float | None = _flag(
        None, "cap on every request's deadlines, whatever it asks (default: none)", float)

    def __post_init__(self) -> None:
        if not self.shard_uris:
            raise ValueError("at least one --shard-uri is required")
        for uri in self.shard_uris:
            _check_uri(uri)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in [0, 65535]. Given: {self.port}")
        positive = ("max_concurrent_requests", "max_best_of", "max_stop_sequence_length",
                    "max_grammar_length", "max_client_batch_size", "payload_limit",
                    "shard_connect_timeout_s", "validation_workers", "keep_alive_interval_s",
                    "keep_alive_timeout_s", "request_body_timeout_s", "health_check_interval_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0. Given: {getattr(self, name)}")
        for name in ("max_stop_sequences", "max_top_n_tokens", "graceful_shutdown_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0. Given: {getattr(self, name)}")
        for name in ("max_input_tokens", "max_total_tokens", "request_timeout_s", "queue_timeout_s",
                     "max_request_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"`{name}` must be > 0. Given: {value}")
        if self.max_input_tokens is not None and self.max_total_tokens is not None:
            if self.max_input_tokens >= self.max_total_tokens:
                raise ValueError("`max_input_tokens` must be < `max_total_tokens`")
        if self.otlp_endpoint is not None and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--otlp-endpoint must be an http:// or https:// URL. Given: {self.otlp_endpoint!r}")
        if self.stream_resume_window_s < 0:
            raise ValueError(f"`stream_resume_window_s` must be >= 0. Given: {self.stream_resume_window_s}")
        if not 0 <= self.priority_reserve_share < 1:
            raise ValueError(f"`priority_reserve_share` must be in [0, 1). Given: {self.priority_reserve_share}")
        if self.api_key == "":
            raise ValueError("--api-key must not be empty")
        if self.responses_store_max_count < 0:
            raise ValueError(f"`responses_store_max_count` must be >= 0. Given: {self.responses_store_max_count}")
        for name in ("responses_store_max_bytes", "responses_store_ttl_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0. Given: {getattr(self, name)}")

    @property
    def default_deadlines(self) -> Deadlines:
        return Deadlines(self.request_timeout_s, self.queue_timeout_s)

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> RouterConfig:
        environ = os.environ if environ is None else environ
        parsed = vars(build_parser(environ).parse_args(argv))
        if parsed["shard_uris"] is None:
            raw = environ.get("SHARD_URI", "")
            parsed["shard_uris"] = [uri.strip() for uri in raw.split(",") if uri.strip()]
        parsed["shard_uris"] = tuple(parsed["shard_uris"])
        return cls(**parsed)


def flag_names() -> set[str]:
    """Every command-line spelling the router accepts (the launcher routes flags by it)."""
    return {alias for parser_action in build_parser({})._actions
            for alias in parser_action.option_strings if alias.startswith("--")}


def flag_value(name: str, argv: Sequence[str], environ: Mapping[str, str] | None = None):
    """One setting as the router resolves it (flag, environment, default), without building
    the rest: the launcher waits for the router's drain before stopping the shards."""
    parsed, _ = build_parser(os.environ if environ is None else environ).parse_known_args(argv)
    return getattr(parsed, name)


def _flag_name(name: str) -> str:
    return "--shard-uri" if name == "shard_uris" else "--" + name.replace("_", "-")


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m router", description="sluice HTTP router")
    for field in dataclasses.fields(RouterConfig):
        flag = _flag_name(field.name)
        names = [flag, *field.metadata["aliases"]]
        if field.name == "shard_uris":
            # The env value is merged in from_args: argparse would append CLI values to it.
            parser.add_argument(*names, dest=field.name, action="append", default=None,
                                help=field.metadata["help"])
            continue
        env_name = flag[2:].replace("-", "_").upper()
        # argparse runs `type` on string defaults, so env values are converted like flags.
        default = environ.get(env_name, field.default)
        parser.add_argument(*names, dest=field.name, type=field.metadata["type"], default=default,
                            help=f"{field.metadata['help']} [env {env_name}; default {field.default}]")
    return parser


def _check_uri(uri: str) -> None:
    if uri.startswith("unix:"):
        return
    host, sep, port = uri.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--shard-uri must be HOST:PORT (or unix:PATH). Given: {uri!r}")


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits after startup: the token limits default to the shard's context size."""

    max_input_tokens: int
    max_total_tokens: int
    max_best_of: int
    max_stop_sequences: int
    max_stop_sequence_length: int
    max_top_n_tokens: int
    max_grammar_length: int


def resolve_limits(config: RouterConfig, shard_max_total_tokens: int) -> Limits:
    max_total = config.max_total_tokens or shard_max_total_tokens
    if max_total > shard_max_total_tokens:
        raise ValueError(f"`max_total_tokens` must be <= the shard's max_total_tokens. "
                         f"Given: {max_total} and {shard_max_total_tokens}")
    max_input = config.max_input_tokens or max_total - 1
    if not 0 < max_input < max_total:
        raise ValueError(f"`max_input_tokens` must be < `max_total_tokens`. Given: {max_input} and {max_total}")
    return Limits(max_input_tokens=max_input, max_total_tokens=max_total, max_best_of=config.max_best_of,
                  max_stop_sequences=config.max_stop_sequences,
                  max_stop_sequence_length=config.max_stop_sequence_length, max_top_n_tokens=config.max_top_n_tokens,
                  max_grammar_length=config.max_grammar_length)
