"""logit_bias, min_tokens and ignore_eos on the real stack (router + shard + SmolLM2):
through the openai SDK on both /v1 routes, and natively on /generate (whose details give
the token ids). A bias of -100 bans the tokens the model would pick and +100 forces one;
min_tokens keeps an answer going past where the model ends it; ignore_eos runs to
max_tokens; n=3 streamed gives each choice its text and end, and the shard's prefix-cache
counter shows the prompt was computed once (on a shard started with --metrics-port, which
the launcher's stack does not pass on)."""
from __future__ import annotations

import urllib.request
from collections import defaultdict

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Process, free_port, serving

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


def test_openai_logit_bias_bans_the_tokens_greedy_decoding_picks(sdk, stack_url):
    free = generate(stack_url, max_new_tokens=8, details=True)["details"]["tokens"]
    bias = {str(token["id"]): -100 for token in free}
    completion = sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=8, temperature=0, logit_bias=bias,
                                        logprobs=0)
    tokens = completion.choices[0].logprobs.tokens
    assert tokens and not set(tokens) & {token["text"] for token in free}
    assert not completion.choices[0].text.startswith(free[0]["text"])


@pytest.fixture(scope="module")
def metered(default_model_dir, tmp_path_factory):
    """One default-model shard with its metrics served, and a router: (SDK client, the
    shard's /metrics URL)."""
    logs = tmp_path_factory.mktemp("metered")
    port, metrics_port = free_port(), free_port()
    shard = Process(["-m", "shard", "--model-id", str(default_model_dir), "--port", str(port),
                     "--metrics-port", str(metrics_port)], logs / "shard.log")
    try:
        shard.wait_for(lambda: "SHARD READY" in shard.output(), 300, "shard")
        with serving(["-m", "router", "--shard-uri", f"127.0.0.1:{port}"], logs / "router.log") as (url, _):
            yield (openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0),
                   f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        shard.stop()


def prefix_cached_tokens(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
        return next(sample.value for family in families for sample in family.samples
                    if sample.name == "sluice_shard_prefix_cached_tokens_total")


def test_n3_streamed_gives_every_choice_text_and_an_end_and_shares_the_prompt(metered):
    client, metrics_url = metered
    cached_before = prefix_cached_tokens(metrics_url)
    stream = client.chat.completions.create(model="tgi", messages=QUESTION, max_tokens=12, n=3, stream=True,
                                            temperature=0.8, seed=5, stream_options={"include_usage": True})
    texts, reasons, usage = defaultdict(str), {}, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            reasons[choice.index] = choice.finish_reason or reasons.get(choice.index)
    assert sorted(texts) == [0, 1, 2] and all(texts.values()), texts
    assert all(reasons[index] in ("stop", "length") for index in range(3)), reasons
    # Two of the three choices copied the prompt's KV (all of it but its last token).
    assert prefix_cached_tokens(metrics_url) - cached_before >= 2 * (usage.prompt_tokens - 1)
