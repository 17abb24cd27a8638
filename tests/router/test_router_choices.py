"""`n` > 1 on both /v1 routes, against the scripted fake shard over real HTTP and gRPC:
n choices per prompt, each its own shard call, indexed prompt-major, whole and streamed
(per-choice `index` and finish); a prompt's tokens count once in usage; seeded sampling
gives choice j the seed + j; prompts x n is bounded by --max-client-batch-size (LangChain's 20 prompts pass); OpenAI's
temperature range. With two shards, all of a prompt's choices go to one (so it prefills the
prompt once), unless no one shard has room for them all."""

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


def prompts_by_shard(stack) -> list[list[tuple[int, ...]]]:
    """Each shard's calls, as their prompts' token ids."""
    return [[tuple(call.input_ids) for call in shard.fake.requests] for shard in stack.shards]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_prompts_choices_share_one_shard(make_stack, stream):
    stack = make_stack(num_shards=2)
    response = post(stack, "/v1/chat/completions", {**CHAT, "n": 3, "stream": stream})
    assert response.status_code == 200, response.text
    assert sorted(len(calls) for calls in prompts_by_shard(stack)) == [0, 3]
    response = post(stack, "/v1/completions", {**COMPLETION, "prompt": ["hello", "the cat"], "n": 2, "stream": stream})
    assert response.status_code == 200, response.text
    # Least outstanding first: the second prompt's pair goes to the other (idle) shard.
    completions = [calls[-2:] for calls in prompts_by_shard(stack) if len(calls) >= 2]
    assert len(completions) == 2 and all(first == second for first, second in completions)
    assert completions[0][0] != completions[1][0]


def test_choices_no_one_shard_holds_spread_out(make_stack):
    stack = make_stack(num_shards=2)  # each fake's KV budget: 4 x 64 = 256 tokens
    response = post(stack, "/v1/completions", {**COMPLETION, "max_tokens": 50, "n": 5})  # 5 x (2 + 50) tokens
    assert response.status_code == 200 and len(response.json()["choices"]) == 5, response.text
    assert sorted(len(calls) for calls in prompts_by_shard(stack)) == [2, 3]


def test_langchains_twenty_prompts_pass(stack):
    prompts = ["hello", "the cat", "how do you make cheese ?", "the mat"] * 5
    response = post(stack, "/v1/completions", {**COMPLETION, "prompt": prompts})
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [choice["index"] for choice in choices] == list(range(20))
    assert all(choice["text"] == output_text(2) for choice in choices) and len(stack.fake.requests) == 20


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
