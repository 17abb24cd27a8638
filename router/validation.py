"""TGI's request validation, check for check and in TGI's order (validation.rs), with its
exact messages. The first failing check wins, so the order is part of the contract."""

from __future__ import annotations

from dataclasses import dataclass

from router.config import Limits
from router.errors import ValidationError
from router.schemas import GenerateParameters, GenerateRequest
from router.tokenizer import PromptTokenizer


@dataclass(frozen=True, slots=True)
class ValidRequest:
    inputs: str
    parameters: GenerateParameters
    input_ids: tuple[int, ...]  # after left truncation
    max_new_tokens: int  # resolved: never None

    @property
    def input_length(self) -> int:
        return len(self.input_ids)


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
        if best_of > limits.max_best_of:
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
        if request.inputs == "":
            raise ValidationError("`inputs` cannot be empty")
        max_input = self._limits.max_input_tokens
        if params.truncate is not None and not 0 < params.truncate <= max_input:
            raise ValidationError(f"`truncate` must be strictly positive and less than {max_input}. "
                                  f"Given: {params.truncate}")
        input_ids = await self._tokenizer.encode(request.inputs, request.add_special_tokens)
        if params.truncate is not None:
            input_ids = input_ids[-params.truncate:]  # left truncation: keep the end
        max_new_tokens = resolve_max_new_tokens(len(input_ids), params.max_new_tokens, self._limits)
        _check_unsupported(params)
        return ValidRequest(inputs=request.inputs, parameters=params, input_ids=tuple(input_ids),
                            max_new_tokens=max_new_tokens)


def _check_sampling(params: GenerateParameters) -> None:
    sampling = params.do_sample or any(
        value is not None for value in (params.temperature, params.top_k, params.top_p, params.typical_p))
    if (params.best_of or 1) > 1 and not sampling:
        raise ValidationError("you must use sampling when `best_of` is > 1")
    if params.temperature is not None and params.temperature <= 0.0:
        raise ValidationError("`temperature` must be strictly positive")
    if params.repetition_penalty is not None and params.repetition_penalty <= 0.0:
        raise ValidationError("`repetition_penalty` must be strictly positive")
    if params.frequency_penalty is not None and not -2.0 <= params.frequency_penalty <= 2.0:
        raise ValidationError("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if params.presence_penalty is not None and not -2.0 <= params.presence_penalty <= 2.0:
        raise ValidationError("`presence_penalty` must be >= -2.0 and <= 2.0")
    # TGI rejects 1.0 too, although it is the internal default.
    if params.top_p is not None and not 0.0 < params.top_p < 1.0:
        raise ValidationError("`top_p` must be > 0.0 and < 1.0")
    if params.typical_p is not None and not 0.0 < params.typical_p < 1.0:
        raise ValidationError("`typical_p` must be > 0.0 and < 1.0")
    if params.top_k is not None and params.top_k <= 0:
        raise ValidationError("`top_k` must be strictly positive")


def _check_stopping(params: GenerateParameters, limits: Limits) -> None:
    if params.max_new_tokens == 0:
        raise ValidationError("`max_new_tokens` must be strictly positive")
    if len(params.stop) > limits.max_stop_sequences:
        raise ValidationError(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. "
                              f"Given: {len(params.stop)}")
    if (params.best_of or 1) > 1 and params.seed is not None:
        raise ValidationError("`seed` must not be set when `best_of` > 1")
    top_n = params.top_n_tokens or 0
    if top_n > limits.max_top_n_tokens:
        raise ValidationError(f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n}")


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


def _check_unsupported(params: GenerateParameters) -> None:
    if params.grammar is not None:
        raise ValidationError("grammar is not supported")
    if params.adapter_id is not None:
        raise ValidationError("`adapter_id` is not supported: this server does not load LoRA adapters")
