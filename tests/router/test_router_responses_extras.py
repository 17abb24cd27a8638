"""/v1/responses at the router, against the scripted fake shard over real HTTP and gRPC:
chat's `stop` as an extension (it reaches the shard, and the output ends before it,
streamed or not, as the openai SDK reads it), and a response too big for the store's byte
bound, whose answer says `"store": false` since it was not kept."""

from __future__ import annotations

import pytest
import requests

from router.openai.responses.store import RESPONSE_STORE
from tests.router.test_router_responses import events_of, not_found, post, sdk


@pytest.fixture
def stack(make_stack):
    return make_stack(max_total_tokens=4096)


def output_text(body: dict) -> str:
    [message] = body["output"]
    return message["content"][0]["text"]


@pytest.mark.parametrize("stop", [" sat", [" on", " sat"]], ids=["string", "list"])
def test_stop_reaches_the_shard_and_ends_the_output_before_it(stack, stop):
    """The fake says " the cat sat on ...": the output is " the cat"."""
    body = post(stack, stop=stop).json()
    assert list(stack.fake.requests[-1].stopping.stop_sequences) == ([stop] if isinstance(stop, str) else stop)
    assert output_text(body) == " the cat" and body["status"] == "completed"
    events = events_of(post(stack, stream=True, stop=stop))
    deltas = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert deltas == " the cat" and output_text(events[-1]["response"]) == " the cat"
    response = sdk(stack).responses.create(model="m", input="hello", max_output_tokens=10,
                                           extra_body={"stop": stop})
    assert response.output_text == " the cat"


def test_without_stop_the_output_runs_on(stack):
    assert output_text(post(stack, max_output_tokens=4).json()) == " the cat sat on"
    assert list(stack.fake.requests[-1].stopping.stop_sequences) == []


@pytest.mark.parametrize("stop, message", [
    (5, "stop: invalid type"),
    ([" a", " b", " c", " d", " e"], "`stop` supports up to 4 stop sequences"),
    (["x" * 1025], "stop sequences of up to 1024"),
])
def test_a_bad_stop_is_a_422_in_openais_shape(stack, stop, message):
    response = post(stack, stop=stop)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]
    assert stack.fake.requests == []


def test_a_response_too_big_to_keep_says_it_was_not_stored(make_stack):
    stack = make_stack(max_total_tokens=4096, responses_store_max_bytes=200)  # less than any response
    body = post(stack).json()
    assert body["store"] is False and len(stack.runner.app[RESPONSE_STORE]) == 0
    assert not_found(requests.get(f"{stack.url}/v1/responses/{body['id']}", timeout=5), body["id"])
    final = events_of(post(stack, stream=True))[-1]["response"]
    assert final["store"] is False
    assert not_found(requests.get(f"{stack.url}/v1/responses/{final['id']}", timeout=5), final["id"])


def test_the_openapi_document_describes_stop_with_its_limits(stack):
    document = requests.get(stack.url + "/api-doc/openapi.json", timeout=5).json()
    stop = document["components"]["schemas"]["ResponsesRequest"]["properties"]["stop"]
    text, strings = stop["oneOf"]
    assert "extension" in stop["description"] and strings["maxItems"] == 4 and text["maxLength"] == 1024
