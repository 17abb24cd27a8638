"""/v1/completions as lm-eval drives it, against the scripted fake shard over real HTTP
and gRPC: token-id prompts (a list of ints, or a list of such lists), and `echo`: the
prompt before the answer, with `logprobs` the prompt tokens' logprobs and alternatives
in OpenAI's legacy object (null for the first token), also with `max_tokens: 0`, which
scores the prompt alone."""

from __future__ import annotations

import pytest

from tests.fakes import VOCAB, output_text
from tests.router.test_router_openai import post

IDS = [VOCAB["the"], VOCAB["cat"], VOCAB["sat"]]


def completion(stack, **body) -> dict:
    response = post(stack, "/v1/completions", {"model": "m", "max_tokens": 2, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_token_id_prompts_reach_the_shard_as_sent(stack):
    body = completion(stack, prompt=IDS)
    assert list(stack.fake.requests[-1].input_ids) == IDS
    assert body["choices"][0]["text"] == output_text(2) and body["usage"]["prompt_tokens"] == 3
    body = completion(stack, prompt=[IDS, IDS[:2]])
    assert [list(call.input_ids) for call in stack.fake.requests[-2:]] == [IDS, IDS[:2]]
    assert [choice["index"] for choice in body["choices"]] == [0, 1]


def test_echo_puts_the_prompt_first(stack):
    body = completion(stack, prompt="hello world", echo=True)
    assert body["choices"][0]["text"] == "hello world" + output_text(2)
    assert completion(stack, prompt=IDS, echo=True)["choices"][0]["text"] == "the cat sat" + output_text(2)


def test_echo_with_logprobs_scores_the_prompt(stack):
    body = completion(stack, prompt=IDS, echo=True, logprobs=1)
    logprobs = body["choices"][0]["logprobs"]
    assert stack.fake.requests[-1].prefill_logprobs
    assert logprobs["tokens"] == ["the", "cat", "sat", " the", " cat"]
    assert logprobs["token_logprobs"][:3] == [None, -2.0, -3.0]
    assert logprobs["top_logprobs"][0] is None and all(len(top) == 1 for top in logprobs["top_logprobs"][1:])
    assert logprobs["text_offset"] == [0, 3, 6, 9, 13]


def test_max_tokens_0_scores_the_prompt_alone(stack):
    body = completion(stack, prompt=IDS, echo=True, logprobs=1, max_tokens=0)
    choice = body["choices"][0]
    assert choice["text"] == "the cat sat" and choice["logprobs"]["tokens"] == ["the", "cat", "sat"]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}


def test_without_echo_nothing_changes(stack):
    body = completion(stack, prompt="hello", logprobs=1)
    assert body["choices"][0]["logprobs"]["tokens"] == [" the", " cat"]
    assert not stack.fake.requests[-1].prefill_logprobs


@pytest.mark.parametrize("extra, message", [
    ({"prompt": [1, "a"]}, "`prompt` must be a string, a list of strings, a list of token ids"),
    ({"prompt": [[1], []]}, "`prompt` must be a string"),
    ({"prompt": [-1]}, "`prompt` must be a string"),
    ({"prompt": [10**6]}, "holds token id 1000000"),
    ({"prompt": "a", "max_tokens": 0}, "0 only with `echo`"),
    ({"prompt": "a", "echo": True, "stream": True}, "`echo` is not supported with `stream`"),
])
def test_bad_prompts_and_echo_are_422(stack, extra, message):
    response = post(stack, "/v1/completions", {"model": "m", "max_tokens": 2, **extra})
    assert response.status_code == 422 and message in response.json()["error"]["message"], response.text
