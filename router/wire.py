"""Domain <-> protobuf conversion and the typed shard client: the only router module
that imports protos, so the rest of the router works with plain dataclasses."""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from protos import shard_pb2, shard_pb2_grpc
from router.schemas import GenerateParameters, Grammar

_GRAMMAR_TYPES = {"json_schema": shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, "regex": shard_pb2.GRAMMAR_TYPE_REGEX,
                  "lark": shard_pb2.GRAMMAR_TYPE_LARK}

_FINISH_REASONS = {
    shard_pb2.FINISH_REASON_LENGTH: "length",
    shard_pb2.FINISH_REASON_EOS_TOKEN: "eos_token",
    shard_pb2.FINISH_REASON_STOP_SEQUENCE: "stop_sequence",
}


@dataclass(frozen=True, slots=True)
class ShardInfo:
    model_id: str
    dtype: str
    device: str
    max_total_tokens: int
    max_batch_total_tokens: int


@dataclass(frozen=True, slots=True)
class ShardLoad:
    num_running: int
    num_waiting: int


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    text: str
    logprob: float | None  # None where the shard has none (NaN on the wire) or it is infinite
    special: bool

    def to_json(self) -> dict:
        """TGI's token object, which OpenAI chunks carry too (TGI's extension)."""
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


@dataclass(frozen=True, slots=True)
class Finished:
    text: str
    generated_tokens: int
    finish_reason: str
    seed: int | None


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """One generated token, as the shard streams it."""

    token: Token
    top_tokens: tuple[Token, ...]
    prefill_tokens: tuple[Token, ...]
    finished: Finished | None
    queue_time_s: float
    prefill_top_tokens: tuple[tuple[Token, ...], ...] = ()  # with prefill_tokens and top_n_tokens


@dataclass(frozen=True, slots=True)
class ShardRequest:
    call_id: str  # made by the router, unique per shard call: the only id on the wire
    log_id: str  # the HTTP request's id (possibly the client's), for logs only
    input_ids: tuple[int, ...]
    parameters: GenerateParameters
    max_new_tokens: int
    priority: str = "normal"
    trace_headers: tuple[tuple[str, str], ...] = ()   # W3C traceparent for the shard's spans


class ShardClient:
    """Typed calls on one shard's channel. gRPC errors propagate as grpc.aio.AioRpcError."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = shard_pb2_grpc.ShardStub(channel)

    async def info(self, timeout_s: float) -> ShardInfo:
        reply = await self._stub.Info(shard_pb2.InfoRequest(), timeout=timeout_s, wait_for_ready=True)
        return ShardInfo(model_id=reply.model_id, dtype=reply.dtype, device=reply.device,
                         max_total_tokens=reply.max_total_tokens,
                         max_batch_total_tokens=reply.max_batch_total_tokens)

    async def tokenizer_files(self, timeout_s: float) -> dict[str, bytes]:
        """What the router tokenizes and renders chat prompts with: it never reads the
        shard's disk, which may be another host's."""
        reply = await self._stub.Tokenizer(shard_pb2.TokenizerRequest(), timeout=timeout_s, wait_for_ready=True)
        return dict(reply.files)

    async def health(self, timeout_s: float) -> ShardLoad:
        reply = await self._stub.Health(shard_pb2.HealthRequest(), timeout=timeout_s)
        return ShardLoad(num_running=reply.num_running, num_waiting=reply.num_waiting)

    async def generate(self, request: ShardRequest) -> AsyncIterator[TokenDelta]:
        call = self._stub.Generate(to_generate_request(request), metadata=request.trace_headers or None)
        try:
            async for message in call:
                yield to_token_delta(message)
        finally:
            # Closing the stream early (client gone, error) must free the shard's slot.
            call.cancel()


def to_generate_request(request: ShardRequest) -> shard_pb2.GenerateRequest:
    params = request.parameters
    sampling = shard_pb2.SamplingParameters(
        do_sample=params.do_sample,
        temperature=_or(params.temperature, 1.0),
        top_k=_or(params.top_k, 0),
        top_p=_or(params.top_p, 1.0),
        typical_p=_or(params.typical_p, 1.0),
        repetition_penalty=_or(params.repetition_penalty, 1.0),
        frequency_penalty=_or(params.frequency_penalty, 0.0),
        presence_penalty=_or(params.presence_penalty, 0.0),
        watermark=params.watermark,
        logit_bias=dict(params.logit_bias),
    )
    if params.seed is not None:  # proto3 optional: unset lets the shard pick one
        sampling.seed = params.seed
    stopping = shard_pb2.StoppingParameters(max_new_tokens=request.max_new_tokens,
                                            stop_sequences=list(params.stop),
                                            ignore_eos_token=params.ignore_eos_token,
                                            min_new_tokens=_or(params.min_new_tokens, 0))
    return shard_pb2.GenerateRequest(
        request_id=request.call_id, input_ids=list(request.input_ids), sampling=sampling,
        stopping=stopping, prefill_logprobs=params.decoder_input_details,
        top_n_tokens=_or(params.top_n_tokens, 0), grammar=_grammar(params.grammar),
        priority=_PRIORITIES[request.priority])


_PRIORITIES = {"high": shard_pb2.PRIORITY_HIGH, "normal": shard_pb2.PRIORITY_NORMAL, "low": shard_pb2.PRIORITY_LOW}


def _grammar(grammar: Grammar | None) -> shard_pb2.Grammar | None:
    """Unset when there is none; validation has made a schema its JSON text."""
    if grammar is None:
        return None
    if not isinstance(grammar.value, str):
        raise TypeError("a grammar reaches the wire only after validation (grammar.check_grammar)")
    return shard_pb2.Grammar(type=_GRAMMAR_TYPES[grammar.kind], value=grammar.value)


def to_token_delta(message: shard_pb2.GenerateResponse) -> TokenDelta:
    finished = None
    if message.HasField("generated_text"):
        generated = message.generated_text
        finished = Finished(
            text=generated.text, generated_tokens=generated.generated_tokens,
            finish_reason=_FINISH_REASONS.get(generated.finish_reason, "length"),
            seed=generated.seed if generated.HasField("seed") else None)
    return TokenDelta(token=_token(message.token), top_tokens=tuple(map(_token, message.top_tokens)),
                      prefill_tokens=tuple(map(_token, message.prefill_tokens)), finished=finished,
                      queue_time_s=message.queue_time_ns / 1e9,
                      prefill_top_tokens=tuple(tuple(map(_token, top.tokens)) for top in message.prefill_top_tokens))


def _token(token: shard_pb2.Token) -> Token:
    # serde_json writes non-finite floats as null; so do we (NaN = no logprob, -inf = impossible).
    logprob = _shortest_f32(token.logprob) if math.isfinite(token.logprob) else None
    return Token(id=token.id, text=token.text, logprob=logprob, special=token.special)


def _shortest_f32(value: float) -> float:
    """The shortest decimal that is the same float32, as TGI's serde prints an f32
    (-0.1, not -0.10000000149011612)."""
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", candidate))[0] == value:
            return candidate
    return value


def _or(value, default):
    return default if value is None else value
