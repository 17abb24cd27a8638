"""A request as the engine sees it: plain Python, no torch, owned by the engine thread."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class FinishReason(enum.IntEnum):
    # Values match the proto's FinishReason enum.
    LENGTH = 0
    EOS_TOKEN = 1
    STOP_SEQUENCE = 2


class SequenceStatus(enum.IntEnum):
    WAITING = 0
    PREFILLING = 1
    DECODING = 2
    FINISHED = 3
    ABORTED = 4

    @property
    def is_finished(self) -> bool:
        return self >= SequenceStatus.FINISHED


@dataclass(frozen=True, slots=True)
class SamplingParams:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    watermark: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()   # (token id, added to its logit)

    @property
    def is_greedy(self) -> bool:
        """TGI samples when asked to, or when any warper is set to a non-default value."""
        warped = (self.temperature != 1.0 or self.top_k > 0 or self.top_p < 1.0
                  or self.typical_p < 1.0)
        return not (self.do_sample or warped)

    @property
    def needs_penalties(self) -> bool:
        return (self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0
                or self.presence_penalty != 0.0)


@dataclass(frozen=True, slots=True)
class StoppingParams:
    max_new_tokens: int = 20
    stop_sequences: tuple[str, ...] = ()
    ignore_eos_token: bool = False
    min_new_tokens: int = 0          # EOS is masked until this many tokens are out


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """What the output must match: `kind` is "json_schema" (value: the schema as JSON text)
    or "regex" (value: a pattern the whole output matches)."""
    kind: str
    value: str


@dataclass(slots=True)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stopping: StoppingParams = field(default_factory=StoppingParams)
    prefill_logprobs: bool = False
    top_n_tokens: int = 0
    priority: int = 1                # 0 high, 1 normal, 2 low: the order waiting requests join in
    grammar: GrammarSpec | None = None
    # The grammar compiled for this request (a grammar.Constraint, set before submit): the
    # runner masks with it and the engine advances it. None: unconstrained.
    constraint: object | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    output_ids: list[int] = field(default_factory=list)
    slot: int = -1                   # KV cache row, -1 while unallocated
    num_computed: int = 0            # tokens whose KV is in the cache
    num_cached: int = 0              # of those, copied from another request's prefix
    finish_reason: FinishReason | None = None
    arrival_s: float = field(default_factory=time.monotonic)
    first_scheduled_s: float | None = None

    @property
    def num_prompt(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def max_tokens(self) -> int:
        """KV tokens this request may need: prompt plus every token it may generate."""
        return self.num_prompt + self.stopping.max_new_tokens

    def token_at(self, position: int) -> int:
        if position < self.num_prompt:
            return self.prompt_ids[position]
        return self.output_ids[position - self.num_prompt]
