"""TGI's request validation, check for check and in TGI's order (validation.rs), with its
exact messages. The first failing check wins, so the order is part of the contract."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from dataclasses import dataclass

from router.config import Limits
from router.errors import ValidationError
from router.grammar import check_grammar
from router.schemas import GenerateParameters, GenerateRequest
from router.tokenizer import PromptTokenizer


@dataclass(frozen=True, slots=True)
class Range:
    """Where a parameter's value must lie (for `stop`, its length). The checks below test
    against these, and the OpenAPI document (router/openapi.py) shows the same bounds."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


# Sampling values reach the shard as float32s (protos/shard.proto): a positive value below
# the smallest normal float32 arrives as 0 (which the shard reads as unset) or subnormal,
# one above the largest as infinity, and neither divides logits usefully.
FLOAT32_MIN = 2.0 ** -126
FLOAT32_MAX = (2.0 - 2.0 ** -23) * 2.0 ** 127

# What validation accepts: TGI's ranges (_SAMPLING_RULES) within float32's. TGI refuses
# top_p = 1.0 too, although it is the internal default.
RANGES: dict[str, Range] = {
    "temperature": Range(FLOAT32_MIN, FLOAT32_MAX),
    "repetition_penalty": Range(FLOAT32_MIN, FLOAT32_MAX),
    "frequency_penalty": Range(-2.0, 2.0),
    "presence_penalty": Range(-2.0, 2.0),
    "top_p": Range(FLOAT32_MIN, 1.0, high_open=True),
    "typical_p": Range(FLOAT32_MIN, 1.0, high_open=True),
    "top_k": Range(low=0, low_open=True),
    "max_new_tokens": Range(low=0, low_open=True),
}


@functools.cache
def limit_ranges(limits: Limits) -> dict[str, Range]:
    """The ranges set by this router's limits. best_of 0 counts as 1 on /generate."""
    return {"best_of": Range(0, limits.max_best_of), "truncate": Range(0, limits.max_input_tokens, low_open=True),
            "stop": Range(0, limits.max_stop_sequences), "stop_length": Range(0, limits.max_stop_sequence_length),
            "top_n_tokens": Range(0, limits.max_top_n_tokens)}


_POSITIVE = Range(low=0.0, low_open=True)
_UNIT_OPEN = Range(0.0, 1.0, low_open=True, high_open=True)

# TGI's checks: its order, ranges and wording (validation.rs).
_SAMPLING_RULES = (
    ("temperature", _POSITIVE, "strictly positive"),
    ("repetition_penalty", _POSITIVE, "strictly positive"),
    ("frequency_penalty", RANGES["frequency_penalty"], ">= -2.0 and <= 2.0"),
    ("presence_penalty", RANGES["presence_penalty"], ">= -2.0 and <= 2.0"),
    ("top_p", _UNIT_OPEN, "> 0.0 and < 1.0"),
    ("typical_p", _UNIT_OPEN, "> 0.0 and < 1.0"),
    ("top_k", RANGES["top_k"], "strictly positive"),
)
# Then float32's bounds (RANGES), which TGI does not check.
_FLOAT32_CHECKED = ("temperature", "repetition_penalty", "top_p", "typical_p")


def _outside(name: str, value: float | None) -> bool:
    return value is not None and value not in RANGES[name]


@dataclass(frozen=True, slots=True)
class ValidRequest:
    inputs: str
    parameters: GenerateParameters
    input_ids: tuple[int, ...]  # after left truncation
    max_new_tokens: int  # resolved: never None

    @property
    def input_length(self) -> int:
        return len(self.input_ids)

    @property
    def num_kv_tokens(self) -> int:
        """What the shard reserves for it: prompt + max_new_tokens."""
        return len(self.input_ids) + self.max_new_tokens


def check_before_admission(params: GenerateParameters, limits: Limits, *, streaming: bool) -> int:
    """Checks TGI makes before taking a concurrency permit. Returns how many shard calls
    (and so permits) the request needs: best_of sub-requests each take one, as in TGI."""
    if streaming:
        if params.best_of not in (None, 1):
            raise ValidationError("`best_of` != 1 is not supported when streaming tokens")
        if params.decoder_input_details:
            raise ValidationError("`decoder_input_details` == true is not supported when streaming tokens")
        return 1
    best_of = params.best_of or 1  # 0 counts as 1 on /generate
    if best_of > 1:
        if limits.max_best_of == 1:
            raise ValidationError("`best_of` != 1 is not allowed for this endpoint")
        if best_of not in limit_ranges(limits)["best_of"]:
            raise ValidationError(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}")
    return best_of


class Validator:
    def __init__(self, limits: Limits, tokenizer: PromptTokenizer) -> None:
        self._limits = limits
        self._tokenizer = tokenizer

    async def validate(self, request: GenerateRequest) -> ValidRequest:
        params = request.parameters
        _check_sampling(params)
        _check_stopping(params, self._limits)
        if request.inputs == "" and request.input_ids is None:
            raise ValidationError("`inputs` cannot be empty")
        max_input = self._limits.max_input_tokens
        if params.truncate is not None and params.truncate not in limit_ranges(self._limits)["truncate"]:
            raise ValidationError(f"`truncate` must be strictly positive and less than {max_input}. "
                                  f"Given: {params.truncate}")
        inputs, input_ids = await self._prompt(request)
        if params.truncate is not None:
            input_ids = input_ids[-params.truncate:]  # left truncation: keep the end
        max_new_tokens = resolve_max_new_tokens(len(input_ids), params.max_new_tokens, self._limits)
        _check_min_and_bias(params, max_new_tokens, self._tokenizer.vocab_size)
        if params.grammar is not None:  # last, as in TGI; compiling it grows with its size
            grammar = await asyncio.to_thread(check_grammar, params.grammar, self._limits.max_grammar_length)
            params = dataclasses.replace(params, grammar=grammar)
        _check_unsupported(params)
        return ValidRequest(inputs=inputs, parameters=params, input_ids=tuple(input_ids),
                            max_new_tokens=max_new_tokens)

    async def _prompt(self, request: GenerateRequest) -> tuple[str, list[int]]:
        """The prompt's text and ids: encoded, or as sent (then its text decoded)."""
        if request.input_ids is None:
            return request.inputs, await self._tokenizer.encode(request.inputs, request.add_special_tokens)
        vocab_size = self._tokenizer.vocab_size
        if not request.input_ids:
            raise ValidationError("`prompt` cannot be an empty list of token ids")
        if len(request.input_ids) > self._limits.max_input_tokens:   # before decoding them
            raise ValidationError(f"`inputs` must have less than {self._limits.max_input_tokens} tokens. "
                                  f"Given: {len(request.input_ids)}")
        if max(request.input_ids) >= vocab_size:
            raise ValidationError(f"`prompt` holds token id {max(request.input_ids)}, but this model's "
                                  f"vocabulary has {vocab_size} tokens")
        return await self._tokenizer.decode(request.input_ids), list(request.input_ids)


def _check_sampling(params: GenerateParameters) -> None:
    sampling = params.do_sample or any(
        value is not None for value in (params.temperature, params.top_k, params.top_p, params.typical_p))
    if (params.best_of or 1) > 1 and not sampling:
        raise ValidationError("you must use sampling when `best_of` is > 1")
    for name, tgi_range, rule in _SAMPLING_RULES:
        value = getattr(params, name)
        if value is not None and value not in tgi_range:
            raise ValidationError(f"`{name}` must be {rule}")
    for name in _FLOAT32_CHECKED:
        value = getattr(params, name)
        if _outside(name, value):
            high = RANGES[name].high
            bounds = f"< {high}" if RANGES[name].high_open else f"<= {high:.8g}"
            raise ValidationError(f"`{name}` must be >= {FLOAT32_MIN:.8g} and {bounds}: it reaches the shard "
                                  f"as a float32. Given: {value}")


def _check_stopping(params: GenerateParameters, limits: Limits) -> None:
    if _outside("max_new_tokens", params.max_new_tokens):
        raise ValidationError("`max_new_tokens` must be strictly positive")
    ranges = limit_ranges(limits)
    if len(params.stop) not in ranges["stop"]:
        raise ValidationError(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. "
                              f"Given: {len(params.stop)}")
    # Holding back a partial stop string costs memory and latency in its length.
    longest = max(map(len, params.stop), default=0)
    if longest not in ranges["stop_length"]:
        raise ValidationError(f"`stop` supports stop sequences of up to {limits.max_stop_sequence_length} "
                              f"characters. Given: {longest}")
    if (params.best_of or 1) > 1 and params.seed is not None:
        raise ValidationError("`seed` must not be set when `best_of` > 1")
    top_n = params.top_n_tokens or 0
    if top_n not in ranges["top_n_tokens"]:
        raise ValidationError(f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n}")


def _check_min_and_bias(params: GenerateParameters, max_new_tokens: int, vocab_size: int) -> None:
    if (params.min_new_tokens or 0) > max_new_tokens:
        raise ValidationError(f"`min_new_tokens` must be <= `max_new_tokens`. Given: {params.min_new_tokens} "
                              f"and {max_new_tokens}")
    for token_id, _ in params.logit_bias:
        if token_id >= vocab_size:
            raise ValidationError(f"Invalid key in `logit_bias`: {token_id} is not a token id of this model "
                                  f"(its vocabulary has {vocab_size} tokens)")


def resolve_max_new_tokens(input_length: int, requested: int | None, limits: Limits) -> int:
    """Unset means "the rest of the context". MaxTotalTokens is checked before InputLength,
    so an over-long prompt without max_new_tokens reports 0 new tokens, as TGI does."""
    max_total = limits.max_total_tokens
    max_new_tokens = max(max_total - input_length, 0) if requested is None else requested
    if input_length + max_new_tokens > max_total:
        raise ValidationError(f"`inputs` tokens + `max_new_tokens` must be <= {max_total}. "
                              f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`")
    if input_length > limits.max_input_tokens:
        raise ValidationError(f"`inputs` must have less than {limits.max_input_tokens} tokens. "
                              f"Given: {input_length}")
    return max_new_tokens


# Parsed only to be refused (below): the OpenAPI document allows them only as null.
UNSUPPORTED = ("adapter_id",)


def _check_unsupported(params: GenerateParameters) -> None:
    if params.adapter_id is not None:
        raise ValidationError("`adapter_id` is not supported: this server does not load LoRA adapters")
