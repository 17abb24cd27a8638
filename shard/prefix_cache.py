"""Prefix reuse across requests, in the slot KV cache. Plain Python, no torch.

A new request whose prompt starts with tokens some slot already holds KV for (a running
request, or a finished one whose slot has not been reused yet) copies those positions
instead of computing them: the shared system prompt of a chat, or the same prompt sent
again. llama.cpp's prompt cache and TGI's prefix caching do the same.

The last prompt token is always computed: its logits give the first new token. In fp32
the output is the same with and without reuse (tested). In bf16 it is as stable as
batching is: a different path for the same rows (the int4 copy for small steps, the
decode-attention kernel) can flip a near-tie.
"""
from __future__ import annotations

from dataclasses import dataclass

from shard.sequence import Sequence, SequenceStatus


@dataclass(frozen=True, slots=True)
class PrefixCopy:
    source_slot: int
    target_slot: int
    num_tokens: int            # positions [0, num_tokens) are copied


class PrefixIndex:
    def __init__(self, min_tokens: int):
        self.min_tokens = min_tokens
        self._retired: dict[int, list[int]] = {}    # free slot -> tokens its KV still holds

    def retire(self, seq: Sequence) -> None:
        """`seq` left its slot: its computed positions stay valid until the slot is reused."""
        self._retired[seq.slot] = (seq.prompt_ids + seq.output_ids)[:seq.num_computed]

    def claim(self, seq: Sequence, running: list[Sequence]) -> PrefixCopy | None:
        """Called once `seq` has its slot: how many prompt positions it can take as they are."""
        own = self._retired.pop(seq.slot, None)
        if seq.prefill_logprobs:           # every prompt position's logits are wanted
            return None
        limit = seq.num_prompt - 1
        best = PrefixCopy(seq.slot, seq.slot, _common_prefix(own, seq.prompt_ids, limit) if own else 0)
        candidates = [(s.slot, _computed_tokens(s), s.num_computed) for s in running
                      if s is not seq and s.prompt_ids[:1] == seq.prompt_ids[:1]]
        candidates += [(slot, tokens, len(tokens)) for slot, tokens in self._retired.items()]
        for slot, tokens, num_valid in candidates:
            length = _common_prefix(tokens, seq.prompt_ids, min(limit, num_valid))
            if length > best.num_tokens:
                best = PrefixCopy(slot, seq.slot, length)
        return best if best.num_tokens >= self.min_tokens else None


    def awaits_sibling(self, seq: Sequence, running: list[Sequence]) -> bool:
        """Whether a running request still prefills a prefix of `seq`'s prompt (at least
        min_tokens, beyond what it has computed): `seq` then waits for it and copies that
        prefix, so n choices of one prompt prefill it once."""
        if seq.prefill_logprobs:
            return False
        limit = seq.num_prompt - 1
        for other in running:
            if other.status is SequenceStatus.PREFILLING and other.prompt_ids[:1] == seq.prompt_ids[:1]:
                length = _common_prefix(other.prompt_ids, seq.prompt_ids, limit)
                if length >= self.min_tokens and other.num_computed < length:
                    return True
        return False


def _computed_tokens(seq: Sequence) -> list[int]:
    # Most candidates are still within their prompt: no copy of the lists then.
    if seq.num_computed <= seq.num_prompt:
        return seq.prompt_ids
    return seq.prompt_ids + seq.output_ids


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    if n <= 0 or a[0] != b[0]:
        return 0
    if a[:n] == b[:n]:
        return n
    low, high = 1, n             # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low
