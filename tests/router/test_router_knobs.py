"""The sampling knobs eval and benchmark clients send, at the router, against the
scripted fake shard over real HTTP and gRPC: OpenAI's `logit_bias` and vLLM's `min_tokens`
and `ignore_eos` on both /v1 routes, and their native names (`min_new_tokens`,
`ignore_eos_token`), reach the shard as sent, and a stop string before min_tokens does
not end the answer; out-of-range values are a 422 in each
route's error shape, naming the field."""

from __future__ import annotations

import pytest
import requests

from tests.router.test_router_openai import sse_chunks

CHAT = ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5})
COMPLETIONS = ("/v1/completions", {"model": "m", "prompt": "hello", "max_tokens": 5})
OPENAI_ROUTES = pytest.mark.parametrize("route", [CHAT, COMPLETIONS], ids=["chat", "completions"])


def post(stack, route, **extra) -> requests.Response:
    path, body = route
    return requests.post(stack.url + path, json={**body, **extra}, timeout=10)


@OPENAI_ROUTES
def test_the_knobs_reach_the_shard(stack, route):
    response = post(stack, route, logit_bias={"7": -100, "12": 55.5, "3": 100}, min_tokens=2, ignore_eos=True)
    assert response.status_code == 200, response.text
    sent = stack.fake.requests[-1]
    assert dict(sent.sampling.logit_bias) == {3: 100.0, 7: -100.0, 12: 55.5}
    assert (sent.stopping.min_new_tokens, sent.stopping.ignore_eos_token) == (2, True)


@OPENAI_ROUTES
def test_unset_knobs_change_nothing(stack, route):
    assert post(stack, route).status_code == 200
    sent = stack.fake.requests[-1]
    assert (dict(sent.sampling.logit_bias), sent.stopping.min_new_tokens, sent.stopping.ignore_eos_token) == \
        ({}, 0, False)


def test_native_names(stack):
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 5, "min_new_tokens": 3, "ignore_eos_token": True}}
    assert requests.post(stack.url + "/generate", json=body, timeout=10).status_code == 200
    sent = stack.fake.requests[-1]
    assert (sent.stopping.min_new_tokens, sent.stopping.ignore_eos_token) == (3, True)


@OPENAI_ROUTES
@pytest.mark.parametrize("extra, message", [
    ({"logit_bias": {"7": 101}}, "outside [-100, 100]"),
    ({"logit_bias": {"7": -100.5}}, "outside [-100, 100]"),
    ({"logit_bias": {"seven": 1}}, "Invalid key in `logit_bias`"),
    ({"logit_bias": {"-1": 1}}, "Invalid key in `logit_bias`"),
    ({"logit_bias": {"7": "high"}}, "logit_bias.7"),
    ({"logit_bias": [7]}, "logit_bias"),
    ({"logit_bias": {"99999999": 1}}, "not a token id of this model"),
    ({"logit_bias": {str(i): 1 for i in range(1025)}}, "up to 1024 tokens"),
    ({"min_tokens": 6}, "`min_tokens` must be <= `max_tokens`"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
])
def test_bad_values_are_422_naming_the_field(stack, route, extra, message):
    response = post(stack, route, **extra)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert message in error["message"] and set(error) >= {"message", "type"}


def test_native_min_over_max_is_a_tgi_422(stack):
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 5, "min_new_tokens": 6}}
    response = requests.post(stack.url + "/generate", json=body, timeout=10)
    assert response.status_code == 422
    assert response.json() == {"error": "Input validation error: `min_new_tokens` must be <= `max_new_tokens`. Given: 6 and 5",
                               "error_type": "validation"}


@OPENAI_ROUTES
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_min_tokens_passes_over_an_early_stop_string(stack, route, stream):
    """The fake says " the cat sat on the mat the cat": the first " cat" ends in token 2,
    before min_tokens, so the answer is cut at the second, as vLLM does."""
    response = post(stack, route, max_tokens=10, min_tokens=3, stop=[" cat"], stream=stream)
    assert response.status_code == 200, response.text
    assert stack.fake.requests[-1].stopping.min_new_tokens == 3
    text, reason = answer(response, route, stream)
    assert (text, reason) == (" the cat sat on the mat the", "stop")
    early = post(stack, route, max_tokens=10, stop=[" cat"], stream=stream)
    assert answer(early, route, stream) == (" the", "stop")


def answer(response: requests.Response, route, stream: bool) -> tuple[str, str]:
    """The choice's text and finish_reason, joined from the chunks when streamed."""
    key = "text" if route is COMPLETIONS else "content"
    if not stream:
        choice = response.json()["choices"][0]
        return choice.get("text", (choice.get("message") or {}).get("content")), choice["finish_reason"]
    choices = [event["choices"][0] for event in sse_chunks(response) if event["choices"]]
    text = "".join((choice.get("delta") or choice).get(key) or "" for choice in choices)
    return text, choices[-1]["finish_reason"]
