"""`n` > 1 on both /v1 routes, against the scripted fake shard over real HTTP and gRPC:
n choices per prompt, each its own shard call, indexed prompt-major, whole and streamed
(per-choice `index` and finish); a prompt's tokens count once in usage; seeded sampling
gives choice j the seed + j; prompts x n is bounded by --max-client-batch-size; OpenAI's
temperature range."""

from __future__ import annotations

import openai
import pytest

from tests.fakes import output_text
from tests.router.test_router_openai import CHAT, post, sse_chunks

COMPLETION = {"model": "m", "prompt": "hello", "max_tokens": 2}


def test_chat_gives_n_choices_and_counts_the_prompt_once(stack):
    one = post(stack, "/v1/chat/completions", CHAT).json()
    body = post(stack, "/v1/chat/completions", {**CHAT, "n": 3}).json()
    assert [choice["index"] for choice in body["choices"]] == [0, 1, 2]
    assert all(choice["message"]["content"] == output_text(3) for choice in body["choices"])
    assert body["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]
    assert body["usage"]["completion_tokens"] == 3 * one["usage"]["completion_tokens"]
    calls = stack.fake.requests[-3:]
    assert len({call.request_id for call in calls}) == 3
    assert all(call.input_ids == calls[0].input_ids for call in calls)


def test_streamed_choices_keep_their_index(stack):
    chunks = sse_chunks(post(stack, "/v1/chat/completions", {**CHAT, "n": 3, "stream": True,
                                                             "stream_options": {"include_usage": True}}))
    for index in range(3):
        mine = [chunk["choices"][0] for chunk in chunks if chunk["choices"] and chunk["choices"][0]["index"] == index]
        assert "".join(choice["delta"]["content"] for choice in mine) == output_text(3)
        assert mine[-1]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 9


def test_completions_index_prompt_major(stack):
    body = post(stack, "/v1/completions", {**COMPLETION, "prompt": ["hello", "the cat"], "n": 2}).json()
    assert [choice["index"] for choice in body["choices"]] == [0, 1, 2, 3]
    first, second = stack.fake.requests[-4:-2], stack.fake.requests[-2:]
    assert first[0].input_ids == first[1].input_ids != second[0].input_ids == second[1].input_ids


def test_seeded_choices_sample_with_seed_plus_index(stack):
    response = post(stack, "/v1/completions", {**COMPLETION, "n": 3, "seed": 41, "temperature": 0.7})
    assert response.status_code == 200, response.text
    assert sorted(call.sampling.seed for call in stack.fake.requests[-3:]) == [41, 42, 43]


def test_the_openai_sdk_reads_n_choices(stack):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.create(model="m", messages=CHAT["messages"], max_tokens=3, n=3)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]


@pytest.mark.parametrize("path, body, message", [
    ("/v1/chat/completions", {**CHAT, "n": 0}, "`n` must be at least 1"),
    ("/v1/chat/completions", {**CHAT, "n": 33}, "Number of prompts x `n` exceeds the maximum allowed batch size of 32"),
    ("/v1/completions", {**COMPLETION, "prompt": ["a"] * 11, "n": 3}, "maximum allowed batch size of 32. Given: 33"),
    ("/v1/chat/completions", {**CHAT, "temperature": 2.5}, "`temperature` must be >= 0 and <= 2"),
    ("/v1/completions", {**COMPLETION, "temperature": -0.1}, "`temperature` must be >= 0 and <= 2"),
])
def test_out_of_range_is_422(stack, path, body, message):
    response = post(stack, path, body)
    assert response.status_code == 422 and message in response.json()["error"]["message"], response.text
