"""protobuf messages <-> shard types. The only shard module that builds or reads messages
(server.py imports just the generated service base)."""
from __future__ import annotations

from collections.abc import Mapping

from protos import shard_pb2
from shard.engine import Load, TokenEvent, TokenInfo
from shard.runtime import ShardInfo
from shard.sequence import GrammarSpec, SamplingParams, Sequence, StoppingParams

_GRAMMAR_KINDS = {shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA: "json_schema",
                  shard_pb2.GRAMMAR_TYPE_REGEX: "regex",
                  shard_pb2.GRAMMAR_TYPE_LARK: "lark"}


def to_sequence(request: shard_pb2.GenerateRequest) -> Sequence:
    s, st = request.sampling, request.stopping
    sampling = SamplingParams(
        do_sample=s.do_sample, temperature=s.temperature or 1.0, top_k=s.top_k,
        top_p=s.top_p or 1.0, typical_p=s.typical_p or 1.0,
        repetition_penalty=s.repetition_penalty or 1.0, frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
        seed=s.seed if s.HasField("seed") else None, watermark=s.watermark,
        logit_bias=tuple(sorted(s.logit_bias.items())))
    stopping = StoppingParams(max_new_tokens=st.max_new_tokens,
                              stop_sequences=tuple(st.stop_sequences),
                              ignore_eos_token=st.ignore_eos_token,
                              min_new_tokens=st.min_new_tokens)
    return Sequence(request_id=request.request_id, prompt_ids=list(request.input_ids),
                    sampling=sampling, stopping=stopping,
                    prefill_logprobs=request.prefill_logprobs,
                    top_n_tokens=request.top_n_tokens, grammar=to_grammar(request.grammar),
                    priority=_PRIORITY_RANKS.get(request.priority, 1))


_PRIORITY_RANKS = {shard_pb2.PRIORITY_HIGH: 0, shard_pb2.PRIORITY_NORMAL: 1, shard_pb2.PRIORITY_LOW: 2}


def to_grammar(grammar: shard_pb2.Grammar) -> GrammarSpec | None:
    """None when unconstrained. A type this shard does not know keeps its number, for the
    compiler to refuse."""
    if grammar.type == shard_pb2.GRAMMAR_TYPE_NONE:
        return None
    return GrammarSpec(_GRAMMAR_KINDS.get(grammar.type, f"type {grammar.type}"), grammar.value)


def _token(info: TokenInfo) -> shard_pb2.Token:
    return shard_pb2.Token(id=info.id, text=info.text, logprob=info.logprob, special=info.special)


def to_response(event: TokenEvent) -> shard_pb2.GenerateResponse:
    response = shard_pb2.GenerateResponse(
        token=_token(event.token),
        top_tokens=[_token(t) for t in event.top_tokens],
        prefill_tokens=[_token(t) for t in event.prefill_tokens],
        prefill_top_tokens=[shard_pb2.TopTokens(tokens=[_token(t) for t in top]) for top in event.prefill_top_tokens])
    if event.queue_time_s is not None:
        response.queue_time_ns = int(event.queue_time_s * 1e9)
    if event.finished is not None:
        f = event.finished
        response.generated_text.CopyFrom(shard_pb2.GeneratedText(
            text=f.text, generated_tokens=f.generated_tokens, finish_reason=int(f.finish_reason)))
        if f.seed is not None:
            response.generated_text.seed = f.seed
    return response


def info_response(info: ShardInfo) -> shard_pb2.InfoResponse:
    return shard_pb2.InfoResponse(
        model_id=info.model_id, dtype=info.dtype, device=info.device,
        max_total_tokens=info.budget.max_total_tokens,
        max_batch_total_tokens=info.budget.max_batch_total_tokens)


def health_response(load: Load) -> shard_pb2.HealthResponse:
    return shard_pb2.HealthResponse(num_running=load.num_running, num_waiting=load.num_waiting)


def tokenizer_response(files: Mapping[str, bytes]) -> shard_pb2.TokenizerResponse:
    return shard_pb2.TokenizerResponse(files=files)
