"""The real client libraries against the router: huggingface_hub 2.x InferenceClient and
AsyncInferenceClient, and text_generation 0.7 Client and AsyncClient. Each posts to the
base URL, i.e. POST /, like their users do."""

from __future__ import annotations

import asyncio

import pytest
import text_generation
import text_generation.errors as tg_errors
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import GenerationError, OverloadedError, ValidationError

from tests.fakes import output_text
from tests.router.support import RawHttp, wait_until

# text_generation 0.7 calls pydantic's deprecated .dict(); that is its business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:text_generation")


def hold_one(stack) -> RawHttp:
    stack.fake.script.block = True
    client = RawHttp(stack.url, "/generate_stream", {"inputs": "hello"})
    assert wait_until(lambda: stack.state.admission.num_in_flight == 1 and stack.fake.num_active == 1)
    return client


def test_hub_sync(stack):
    client = InferenceClient(stack.url)
    assert client.text_generation("hello", max_new_tokens=5) == output_text(5)
    output = client.text_generation("hello", max_new_tokens=3, details=True)
    assert output.generated_text == output_text(3)
    assert output.details.finish_reason == "length" and output.details.generated_tokens == 3
    assert [token.text for token in output.details.tokens] == [" the", " cat", " sat"]
    assert list(client.text_generation("hello", max_new_tokens=4, stream=True)) == [" the", " cat", " sat", " on"]
    events = list(client.text_generation("hello", max_new_tokens=2, stream=True, details=True))
    assert [event.index for event in events] == [1, 2] and events[0].details is None
    assert events[-1].generated_text == output_text(2)
    assert events[-1].details.finish_reason == "length" and events[-1].details.input_length == 2


def test_hub_async(stack):
    async def run():
        client = AsyncInferenceClient(stack.url)
        assert await client.text_generation("hello", max_new_tokens=2) == output_text(2)
        output = await client.text_generation("hello", max_new_tokens=2, details=True, decoder_input_details=True)
        assert output.details.prefill[0].logprob is None and len(output.details.prefill) == 2
        tokens = [token async for token in await client.text_generation("hello", max_new_tokens=3, stream=True)]
        assert tokens == [" the", " cat", " sat"]
        events = [event async for event in await client.text_generation(
            "hello", max_new_tokens=2, stream=True, details=True)]
        assert events[-1].details.generated_tokens == 2
        await client.close()

    asyncio.run(run())


def test_hub_overloaded(make_stack):
    stack = make_stack(max_concurrent_requests=1)
    held = hold_one(stack)
    client = InferenceClient(stack.url)
    with pytest.raises(OverloadedError):
        client.text_generation("hello", max_new_tokens=2)
    with pytest.raises(OverloadedError):
        list(client.text_generation("hello", max_new_tokens=2, stream=True))

    async def run_async():
        async_client = AsyncInferenceClient(stack.url)
        with pytest.raises(OverloadedError):
            await async_client.text_generation("hello", max_new_tokens=2)
        with pytest.raises(OverloadedError):  # needs Content-Length on the 429 (hub 2.x async)
            [token async for token in await async_client.text_generation("hello", max_new_tokens=2, stream=True)]
        await async_client.close()

    asyncio.run(run_async())
    held.close()


def test_hub_validation_and_generation_errors(stack):
    client = InferenceClient(stack.url)
    with pytest.raises(ValidationError, match="`temperature` must be strictly positive"):
        client.text_generation("hello", temperature=0.0)
    with pytest.raises(ValidationError):
        list(client.text_generation("hello", top_p=1.0, stream=True))

    async def run_async():
        async_client = AsyncInferenceClient(stack.url)
        with pytest.raises(ValidationError):
            await async_client.text_generation("hello", top_k=0)
        with pytest.raises(ValidationError):
            [token async for token in await async_client.text_generation("", stream=True)]
        await async_client.close()

    asyncio.run(run_async())
    stack.fake.script.fail_after = 2
    with pytest.raises(GenerationError):  # an error event after two tokens
        list(client.text_generation("hello", max_new_tokens=5, stream=True))
    with pytest.raises(GenerationError):
        client.text_generation("hello", max_new_tokens=5)


def test_text_generation_sync(stack):
    client = text_generation.Client(stack.url)
    response = client.generate("hello", max_new_tokens=3)
    assert response.generated_text == output_text(3)
    assert response.details.generated_tokens == 3 and len(response.details.tokens) == 3
    events = list(client.generate_stream("hello", max_new_tokens=4))
    assert [event.token.text for event in events] == [" the", " cat", " sat", " on"]
    assert events[-1].generated_text == output_text(4)
    assert events[-1].details.finish_reason == text_generation.types.FinishReason.Length
    with pytest.raises(tg_errors.ValidationError):
        client.generate("hello", max_new_tokens=100)


def test_text_generation_async(stack):
    async def run():
        client = text_generation.AsyncClient(stack.url)
        response = await client.generate("hello", max_new_tokens=2, top_n_tokens=2)
        assert response.generated_text == output_text(2) and len(response.details.top_tokens) == 2
        events = [event async for event in client.generate_stream("hello", max_new_tokens=3)]
        assert [event.token.text for event in events] == [" the", " cat", " sat"]
        assert events[-1].details.generated_tokens == 3

    asyncio.run(run())


def test_text_generation_overloaded(make_stack):
    stack = make_stack(max_concurrent_requests=1)
    held = hold_one(stack)
    client = text_generation.Client(stack.url)
    with pytest.raises(tg_errors.OverloadedError):
        client.generate("hello")
    with pytest.raises(tg_errors.OverloadedError):
        list(client.generate_stream("hello"))
    held.close()
