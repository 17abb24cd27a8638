"""OpenAI's Responses API on the real stack (router + shard + SmolLM2) through the openai npm
package (Node, unchanged), driven by tests/node/responses.mjs: responses.create whole and
streamed (every event in OpenAI's order, numbered 0..n-1, the deltas joining to the final
text), the responses.stream helper (its `.on` listeners and finalResponse), a
previous_response_id follow-up with retrieve, inputItems.list (the first page, and every
page by `after`), delete and the 404s after it, and a function tool round trip (a required
call whose arguments validate against the tool's parameters, its output sent back by
previous_response_id and as the whole conversation, each answered in text). Everything the
script prints is also validated against the Python SDK's own types. The model is tiny:
shapes and validity are checked, never the content."""

from __future__ import annotations

import json
import subprocess

import jsonschema
import pytest
from openai.types import responses as types
from pydantic import TypeAdapter

from tests.e2e.test_openai_clients import NODE_DIR, check_node_setup

MAX_TOKENS, TOOL_TOKENS = 40, 60  # responses.mjs's: a call's JSON takes more tokens than a short answer
# The tool responses.mjs declares, as it must reach the server.
WEATHER_PARAMETERS = {"type": "object", "additionalProperties": False, "required": ["city", "unit"], "properties": {
    "city": {"type": "string", "maxLength": 30}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}
WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city", "strict": True,
           "parameters": WEATHER_PARAMETERS}
QUESTION = {"role": "user", "content": "What is the weather like in Paris today?"}
TEXT_START = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
TEXT_END = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
STREAM_EVENT = TypeAdapter(types.ResponseStreamEvent)


def run_responses(url: str, call: str) -> dict:
    check_node_setup()
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("the openai package in tests/node is missing: run `make test-deps`")
    result = subprocess.run(["node", "responses.mjs", call, url], cwd=NODE_DIR, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def check_request(request: dict, max_tokens: int = MAX_TOKENS) -> dict:
    assert request["method"] == "POST" and request["path"] == "/v1/responses"
    body = request["body"]
    assert body["model"] == "tgi" and body["temperature"] == 0 and body["max_output_tokens"] == max_tokens
    return body


def message_text(response: dict) -> str:
    """The one assistant message's one output_text part; the SDK's output_text is its text."""
    [message] = response["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["id"].startswith("msg_")
    [part] = message["content"]
    assert part["type"] == "output_text" and part["annotations"] == []
    assert response["output_text"] == part["text"] != ""
    return part["text"]


def check_response(response: dict, max_tokens: int = MAX_TOKENS) -> dict:
    types.Response.model_validate(response)
    assert response["id"].startswith("resp_") and response["object"] == "response" and response["error"] is None
    assert response["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and response["max_output_tokens"] == max_tokens
    assert response["completed_at"] >= response["created_at"] and response["store"] is True
    if response["status"] == "incomplete":
        assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    else:
        assert response["status"] == "completed" and response["incomplete_details"] is None
    usage = response["usage"]
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= max_tokens
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    return response


def test_create(stack_url):
    output = run_responses(stack_url, "create")
    [request] = output["requests"]
    assert "stream" not in check_request(request)
    response = check_response(output["response"])
    assert response["instructions"] == "Answer in one sentence." and message_text(response)


def check_text_events(events: list[dict]) -> dict:
    """One text answer's stream, strictly in OpenAI's order; returns the final response."""
    for event in events:
        STREAM_EVENT.validate_python(event)
    names = [event["type"] for event in events]
    deltas = names[len(TEXT_START):-len(TEXT_END) - 1]
    assert deltas and set(deltas) == {"response.output_text.delta"}
    assert names == [*TEXT_START, *deltas, *TEXT_END, "response.completed"]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    created, in_progress, added, part_added, *_ = events
    assert created["response"]["status"] == in_progress["response"]["status"] == "in_progress"
    assert created["response"]["output"] == [] and created["response"]["usage"] is None
    item_id = added["item"]["id"]
    for event in events[2:-1]:  # every event of the one output item names it
        assert event["output_index"] == 0 and (event["item"]["id"] if "item" in event else event["item_id"]) == item_id
    assert part_added["part"] == {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    joined = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    text_done, part_done, item_done, completed = events[-4:]
    assert text_done["text"] == part_done["part"]["text"] == item_done["item"]["content"][0]["text"] == joined
    assert item_done["item"]["status"] == "completed"
    final = check_response(completed["response"])
    assert final["id"] == created["response"]["id"] and final["output"] == [item_done["item"]]
    assert final["usage"]["output_tokens"] >= len(deltas)
    return final


def test_create_stream(stack_url):
    output = run_responses(stack_url, "create-stream")
    [request] = output["requests"]
    assert check_request(request)["stream"] is True
    final = check_text_events(output["events"])
    assert final["output"][0]["content"][0]["text"] != ""


def test_stream_helper(stack_url):
    output = run_responses(stack_url, "stream-helper")
    [request] = output["requests"]
    assert check_request(request)["stream"] is True
    names, deltas = output["types"], output["deltas"]
    assert names == [*TEXT_START, *["response.output_text.delta"] * len(deltas), *TEXT_END, "response.completed"]
    # Each delta event carries the text so far, the helper's snapshot.
    assert output["snapshots"] == ["".join(deltas[:n + 1]) for n in range(len(deltas))]
    final = check_response(output["final"])
    assert final["status"] == "completed" and message_text(final) == "".join(deltas)


def check_listed_message(item: dict, role: str, text: str) -> None:
    part_type = "output_text" if role == "assistant" else "input_text"
    part = {"type": part_type, "text": text, **({"annotations": [], "logprobs": []} if role == "assistant" else {})}
    assert item == {"id": item["id"], "type": "message", "status": "completed", "role": role, "content": [part]}


def test_follow_up_retrieve_input_items_and_delete(stack_url):
    output = run_responses(stack_url, "follow-up")
    first, second = check_response(output["first"]), check_response(output["second"])
    assert check_request(output["requests"][1])["previous_response_id"] == first["id"]
    assert second["previous_response_id"] == first["id"] and first["previous_response_id"] is None
    assert first["metadata"] == {"turn": "1"} and second["metadata"] == {}
    # The follow-up's prompt holds the first turn (question and answer) before the new input.
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
    assert output["retrieved"] == second
    page = output["page"]
    types.ResponseItemList.model_validate(page)
    newest, answer, oldest = page["data"]  # desc by default
    check_listed_message(newest, "user", "What is my name?")
    check_listed_message(answer, "assistant", message_text(first))
    check_listed_message(oldest, "user", "My name is Olivier.")
    assert answer["id"] == first["output"][0]["id"]  # the earlier turn's item, under the id it was answered with
    assert (page["object"], page["first_id"], page["last_id"], page["has_more"]) == (
        "list", newest["id"], oldest["id"], False)
    # Two a page, oldest first: the SDK asked again `after` the first page's last item.
    assert output["items"] == page["data"][::-1]
    paths = [request["path"] for request in output["requests"] if "input_items" in request["path"]]
    base = f"/v1/responses/{second['id']}/input_items"
    assert paths[:3] == [base, base + "?limit=2&order=asc", base + f"?limit=2&order=asc&after={answer['id']}"]
    assert output["deleted"] == {"id": second["id"], "object": "response", "deleted": True}
    for failure in (output["retrieveDeleted"], output["listDeleted"]):
        assert failure == {"name": "NotFoundError", "status": 404, "notFound": True, "error": {
            "message": f"Response with id '{second['id']}' not found.", "type": "invalid_request_error",
            "param": None, "code": 404}}
    assert output["firstStillThere"] == first["id"]


def test_a_function_tool_round_trip(stack_url):
    output = run_responses(stack_url, "tool-round-trip")
    first_request, chained_request, whole_request = (request["body"] for request in output["requests"][:3])
    check_request(output["requests"][0], TOOL_TOKENS)
    assert first_request["tools"] == [WEATHER] and first_request["tool_choice"] == "required"
    called = check_response(output["called"], TOOL_TOKENS)
    assert called["status"] == "completed" and called["tools"][0]["parameters"] == WEATHER_PARAMETERS
    [call] = called["output"]
    assert call["type"] == "function_call" and call["status"] == "completed" and call["name"] == "get_weather"
    assert call["id"].startswith("fc_") and call["call_id"].startswith("call_")
    arguments = json.loads(call["arguments"])
    jsonschema.validate(arguments, WEATHER_PARAMETERS)
    result = output["result"]
    assert result["call_id"] == call["call_id"] and json.loads(result["output"])["city"] == arguments["city"]
    assert chained_request["input"] == [result] and chained_request["previous_response_id"] == called["id"]
    assert whole_request["input"] == [QUESTION, call, result]
    for answer, request in ((output["chained"], chained_request), (output["whole"], whole_request)):
        assert request["tool_choice"] == "none" and answer["tool_choice"] == "none"
        assert message_text(check_response(answer))
    assert output["chained"]["previous_response_id"] == called["id"] and output["whole"]["previous_response_id"] is None
    # What the chained answer was made from: the question, the call (its id kept), its output.
    question, listed_call, listed_result = output["items"]
    check_listed_message(question, "user", QUESTION["content"])
    assert listed_call == {**call, "status": "completed"}
    assert listed_result == {"id": listed_result["id"], "type": "function_call_output", "status": "completed",
                             "call_id": call["call_id"], "output": result["output"]}
