"""What the OpenAI-route clients make of our answers and errors, against scripted shards:
the openai SDK and huggingface_hub's chat_completion. The error body is OpenAI's object
plus TGI's `error_type` (errors.RouterError.to_openai_dict); these tests pin down that
each client raises its own fitting exception and shows our message."""

from __future__ import annotations

import asyncio

import openai
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import GenerationError, HfHubHTTPError

from tests.fakes import output_text
from tests.router.support import RawHttp, wait_until

MESSAGES = [{"role": "user", "content": "hello"}]


def sdk(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)


def test_openai_sdk_chat_and_completions(stack):
    client = sdk(stack)
    chat = client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=3)
    assert chat.choices[0].message.content == output_text(3) and chat.usage.completion_tokens == 3
    chunks = list(client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=3, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(chunk.choices[0].delta.content for chunk in chunks if chunk.choices) == output_text(3)
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 3
    completion = client.completions.create(model="tgi", prompt="hello", max_tokens=2)
    assert completion.choices[0].text == output_text(2)
    stream = client.completions.create(model="tgi", prompt=["hello", "cat"], max_tokens=2, stream=True)
    texts = ["", ""]
    for chunk in stream:
        texts[chunk.choices[0].index] += chunk.choices[0].text
    assert texts == [output_text(2)] * 2


def test_openai_sdk_errors_carry_our_message(make_stack):
    stack = make_stack(max_concurrent_requests=1)
    client = sdk(stack)
    with pytest.raises(openai.UnprocessableEntityError) as error:
        client.chat.completions.create(model="tgi", messages=MESSAGES, n=0)
    assert str(error.value) == "Error code: 422 - Input validation error: `n` must be at least 1. Given: 0"
    assert error.value.type == "validation"
    stack.fake.script.block = True
    held = RawHttp(stack.url, "/v1/completions", {"prompt": "hello", "stream": True})
    assert wait_until(lambda: stack.state.admission.num_in_flight == 1)
    with pytest.raises(openai.RateLimitError, match="Model is overloaded"):
        client.completions.create(model="tgi", prompt="hello")
    held.close()


def test_openai_sdk_raises_on_an_error_mid_stream(stack):
    stack.fake.script.fail_after = 2
    stream = sdk(stack).chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=5, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="Request failed during generation: Server error: scripted"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == [" the", " cat"]


def test_hub_chat_completion(stack):
    client = InferenceClient(stack.url)
    output = client.chat_completion(MESSAGES, max_tokens=3)
    assert output.choices[0].message.content == output_text(3)
    chunks = list(client.chat_completion(MESSAGES, max_tokens=3, stream=True))
    assert "".join(chunk.choices[0].delta.content for chunk in chunks) == output_text(3)
    assert chunks[-1].choices[0].finish_reason == "length"

    async def run_async():
        async_client = AsyncInferenceClient(stack.url)
        chunks = [chunk async for chunk in await async_client.chat_completion(MESSAGES, max_tokens=2, stream=True)]
        await async_client.close()
        return "".join(chunk.choices[0].delta.content for chunk in chunks)

    assert asyncio.run(run_async()) == output_text(2)


def test_hub_chat_completion_errors(stack):
    client = InferenceClient(stack.url)
    with pytest.raises(HfHubHTTPError, match="`n` must be at least 1"):  # hub maps no HTTP error on chat routes
        client.chat_completion(MESSAGES, n=0)
    stack.fake.script.fail_after = 1
    with pytest.raises(GenerationError, match="Request failed during generation"):  # mapped by error_type
        list(client.chat_completion(MESSAGES, max_tokens=5, stream=True))
