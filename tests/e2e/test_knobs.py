"""logit_bias, min_tokens and ignore_eos on the real stack (router + shard + SmolLM2):
through the openai SDK on both /v1 routes, and natively on /generate (whose details give
the token ids). A bias of -100 bans the tokens the model would pick and +100 forces one;
min_tokens keeps an answer going past where the model ends it; ignore_eos runs to
max_tokens."""
from __future__ import annotations

from tests.e2e.test_parameters import PROMPT, generate

QUESTION = [{"role": "user", "content": "Say hi."}]


def token_ids(out: dict) -> list[int]:
    return [token["id"] for token in out["details"]["tokens"]]


def test_native_logit_bias_bans_and_forces(stack_url):
    free = token_ids(generate(stack_url, max_new_tokens=8, details=True))
    bias = {str(token_id): -100 for token_id in free}
    banned = token_ids(generate(stack_url, max_new_tokens=8, details=True, logit_bias=bias))
    assert len(banned) == 8 and not set(banned) & set(free)
    forced = token_ids(generate(stack_url, max_new_tokens=6, details=True, logit_bias={str(free[0] + 1): 100}))
    assert forced == [free[0] + 1] * 6


def test_openai_logit_bias_forces_a_token_on_both_routes(sdk, stack_url):
    token = token_ids(generate(stack_url, max_new_tokens=1, details=True))[0]
    text = generate(stack_url, max_new_tokens=1, details=True)["details"]["tokens"][0]["text"]
    chat = sdk.chat.completions.create(model="tgi", messages=QUESTION, max_tokens=4, temperature=0,
                                       logit_bias={str(token): 100})
    assert chat.choices[0].message.content == text * 4
    completion = sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=4, temperature=0,
                                        logit_bias={str(token): 100})
    assert completion.choices[0].text == text * 4


def test_min_tokens_goes_past_the_models_end(sdk):
    free = sdk.chat.completions.create(model="tgi", messages=QUESTION, max_tokens=100, temperature=0)
    assert free.choices[0].finish_reason == "stop"
    num_free = free.usage.completion_tokens
    longer = sdk.chat.completions.create(model="tgi", messages=QUESTION, max_tokens=100, temperature=0,
                                         extra_body={"min_tokens": num_free + 10})
    assert longer.usage.completion_tokens >= num_free + 10
    assert longer.choices[0].message.content.startswith(free.choices[0].message.content)


def test_ignore_eos_runs_to_max_tokens(sdk, stack_url):
    free = sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=60, temperature=0)
    assert free.usage.completion_tokens < 60 and free.choices[0].finish_reason == "stop"
    completion = sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=60, temperature=0,
                                        extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 60 and completion.choices[0].finish_reason == "length"
    native = generate(stack_url, max_new_tokens=60, ignore_eos_token=True, details=True)
    assert native["details"]["generated_tokens"] == 60 and native["details"]["finish_reason"] == "length"
