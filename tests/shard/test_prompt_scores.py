"""Prompt scoring in the engine (what /v1/completions' echo with logprobs reads), on the
tiny random Llama (fp32, CPU): with prefill_logprobs and top_n_tokens, each prompt token
after the first comes with its most likely alternatives, the best first, and its own
logprob is among them when it is the best; the first has none."""
from __future__ import annotations

import math

PROMPT = [40, 41, 42, 43, 44, 45, 46, 47]


def test_prompt_tokens_come_with_their_alternatives(harness_factory):
    harness = harness_factory()
    assert harness.submit("scored", PROMPT, 1, prefill_logprobs=True, top_n_tokens=3) is None
    (event,) = harness.collect("scored")
    assert [token.id for token in event.prefill_tokens] == PROMPT
    tops = event.prefill_top_tokens
    assert len(tops) == len(PROMPT) and tops[0] == ()
    for token, top in zip(event.prefill_tokens[1:], tops[1:]):
        logprobs = [alternative.logprob for alternative in top]
        assert len(top) == 3 and logprobs == sorted(logprobs, reverse=True)
        assert token.logprob <= logprobs[0] + 1e-5
        if token.id == top[0].id:
            assert math.isclose(token.logprob, logprobs[0], abs_tol=1e-5)


def test_without_top_n_tokens_there_are_none(harness_factory):
    harness = harness_factory()
    assert harness.submit("plain", PROMPT, 1, prefill_logprobs=True) is None
    (event,) = harness.collect("plain")
    assert len(event.prefill_tokens) == len(PROMPT) and event.prefill_top_tokens == ()
