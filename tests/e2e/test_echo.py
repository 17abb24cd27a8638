"""/v1/completions as lm-eval's loglikelihood requests drive it, on the real stack (router
+ shard + SmolLM2): a token-id prompt answers as its text does; `echo` with `logprobs`
scores the prompt with the same logprobs TGI's decoder_input_details gives, the
alternatives holding the best token (so lm-eval's is_greedy works), and `max_tokens: 0`
scores the prompt alone."""
from __future__ import annotations

import math

from tests.e2e.test_parameters import PROMPT, generate


def prompt_ids(stack_url) -> list[int]:
    prefill = generate(stack_url, max_new_tokens=1, details=True, decoder_input_details=True)["details"]["prefill"]
    return [token["id"] for token in prefill]


def test_a_token_id_prompt_answers_as_its_text(sdk, stack_url):
    ids = prompt_ids(stack_url)
    by_text = sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=12, temperature=0)
    by_ids = sdk.completions.create(model="tgi", prompt=ids, max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids)


def test_echo_scores_the_prompt_as_decoder_input_details_does(sdk, stack_url):
    native = generate(stack_url, max_new_tokens=1, details=True, decoder_input_details=True)["details"]["prefill"]
    ids = [token["id"] for token in native]
    scored = sdk.completions.create(model="tgi", prompt=ids, max_tokens=0, echo=True, logprobs=1, temperature=0)
    choice = scored.choices[0]
    assert choice.text == PROMPT and scored.usage.completion_tokens == 0
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(ids) and logprobs.token_logprobs[0] is None
    assert logprobs.top_logprobs[0] is None
    for mine, theirs in zip(logprobs.token_logprobs[1:], native[1:]):
        assert math.isclose(mine, theirs["logprob"], abs_tol=1e-3)
    for token_logprob, top in zip(logprobs.token_logprobs[1:], logprobs.top_logprobs[1:]):
        assert len(top) == 1 and max(top.values()) >= token_logprob - 1e-4
    assert any(math.isclose(max(top.values()), lp, abs_tol=1e-4)    # some prompt tokens are the greedy pick
               for lp, top in zip(logprobs.token_logprobs[1:], logprobs.top_logprobs[1:]))


def test_echo_with_an_answer_appends_it(sdk):
    plain = sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=5, temperature=0)
    echoed = sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=5, temperature=0, echo=True, logprobs=2)
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text
    assert len(echoed.choices[0].logprobs.tokens) == echoed.usage.prompt_tokens + 5
