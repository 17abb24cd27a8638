"""OpenAI's Responses API at the router, against the scripted fake shard over real HTTP and
gRPC: the typed event stream (order, `event:` lines, sequence numbers, deltas joining to
the text, every event and Response valid against the openai SDK's own pydantic types),
function calls (argument fragments joining exactly, wherever the token boundaries fall),
incomplete answers, the store (GET, DELETE, 404, store off, eviction by count, bytes and
age), the input items a stored response lists (OpenAI's shapes, ids, pages, refused queries),
previous_response_id making the same prompt as the conversation sent whole, refused
fields, admission, failures and drains after the headers, keep-alive and disconnects."""

from __future__ import annotations

import json
import threading

import openai
import pytest
import requests
from openai.types import responses as types

from router.config import RouterConfig
from router.openai.responses.items import parse_input, to_messages
from router.openai.responses.store import ResponseStore
from router.openai.responses.store import RESPONSE_STORE
from router.state import DRAIN
from tests.router.support import RawHttp, wait_until
from tests.router.test_router_tools import ARGUMENTS, CALL, pieces, sent_schema, splits

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                          "required": ["city"]}}
EVENT_TYPES = {model.model_fields["type"].annotation.__args__[0]: model for model in (
    types.ResponseCreatedEvent, types.ResponseInProgressEvent, types.ResponseOutputItemAddedEvent,
    types.ResponseContentPartAddedEvent, types.ResponseTextDeltaEvent, types.ResponseTextDoneEvent,
    types.ResponseContentPartDoneEvent, types.ResponseOutputItemDoneEvent, types.ResponseCompletedEvent,
    types.ResponseIncompleteEvent, types.ResponseFailedEvent, types.ResponseFunctionCallArgumentsDeltaEvent,
    types.ResponseFunctionCallArgumentsDoneEvent)}
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"]
TEXT_END = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


@pytest.fixture
def stack(make_stack):
    return make_stack(max_total_tokens=4096)  # the tool prompt takes many of the fake's word tokens


def post(stack, **body) -> requests.Response:
    """A request; the fake's unscripted answer is one word a token, up to max_output_tokens."""
    body = {"model": "m", "input": "hello", "max_output_tokens": 10, **body}
    return requests.post(stack.url + "/v1/responses", json=body, timeout=10)


def events_of(response: requests.Response) -> list[dict]:
    """A Responses stream, strictly: `event: <type>` + `data: {json}` frames (keep-alive
    comments skipped), no [DONE], numbered from 0, each valid as the SDK's event type."""
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/event-stream"
    body = response.content
    assert body.endswith(b"\n\n") and b"[DONE]" not in body
    events = []
    for frame in body[:-2].split(b"\n\n"):
        if frame == b":":
            continue
        name, data = frame.split(b"\n")
        event = json.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + event["type"].encode()
        EVENT_TYPES[event["type"]].model_validate(event)
        events.append(event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    return events


def kinds(events: list[dict]) -> list[str]:
    return [event["type"] for event in events]


def sdk(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)


def checked(body: dict) -> dict:
    types.Response.model_validate(body)
    return body


# Text answers.

def test_a_text_answer_streams_in_openai_order(stack):
    stack.fake.script.output_texts = ["Hel", "lo", " world"]
    events = events_of(post(stack, stream=True))
    assert kinds(events) == [*TEXT_EVENTS, *["response.output_text.delta"] * 3, *TEXT_END, "response.completed"]
    created, final = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["id"].startswith("resp_")
    assert final["id"] == created["id"] and final["status"] == "completed"
    item = events[2]["item"]
    assert item["type"] == "message" and item["id"].startswith("msg_") and item["status"] == "in_progress"
    deltas = [event for event in events if event["type"] == "response.output_text.delta"]
    assert [event["delta"] for event in deltas] == ["Hel", "lo", " world"]
    assert all((event["item_id"], event["output_index"], event["content_index"], event["logprobs"])
               == (item["id"], 0, 0, []) for event in deltas)
    assert events[-4]["text"] == "Hello world" and events[-3]["part"]["text"] == "Hello world"
    assert final["output"] == [events[-2]["item"]] == [{
        "id": item["id"], "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "Hello world", "annotations": [], "logprobs": []}]}]
    usage = final["usage"]
    assert usage["output_tokens"] == 4 and usage["total_tokens"] == usage["input_tokens"] + 4  # 3 pieces and EOS
    assert usage["input_tokens"] == len(stack.fake.requests[-1].input_ids)


def test_the_response_object_echoes_the_request(stack):
    stack.fake.script.output_texts = ["Hi"]
    body = checked(post(stack, instructions="be brief", temperature=0.5, top_p=0.9, max_output_tokens=20,
                        metadata={"k": "v"}, user="u1").json())
    assert body["object"] == "response" and body["status"] == "completed" and body["incomplete_details"] is None
    assert body["model"] == "fake-org/fake-model" and body["output"][0]["content"][0]["text"] == "Hi"
    assert {key: body[key] for key in ("instructions", "temperature", "top_p", "max_output_tokens", "metadata",
                                       "user", "store", "previous_response_id", "tools", "tool_choice",
                                       "parallel_tool_calls", "text")} == {
        "instructions": "be brief", "temperature": 0.5, "top_p": 0.9, "max_output_tokens": 20,
        "metadata": {"k": "v"}, "user": "u1", "store": True, "previous_response_id": None, "tools": [],
        "tool_choice": "auto", "parallel_tool_calls": True, "text": {"format": {"type": "text"},
                                                                      "verbosity": "medium"}}
    sampling = stack.fake.requests[-1].sampling
    assert abs(sampling.temperature - 0.5) < 1e-6 and abs(sampling.top_p - 0.9) < 1e-6
    assert stack.fake.requests[-1].stopping.max_new_tokens == 20
    assert set(body["usage"]) == {"input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details",
                                  "total_tokens"}


def test_length_makes_an_incomplete_response(stack):
    body = checked(post(stack, max_output_tokens=2).json())
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["output"][0]["content"][0]["text"] == " the cat"
    events = events_of(post(stack, max_output_tokens=2, stream=True))
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["status"] == "incomplete"
    assert events[-2]["item"]["status"] == "incomplete"


def test_an_empty_answer_is_an_empty_message(stack):
    stack.fake.script.output_texts = []
    body = checked(post(stack).json())
    assert [item["content"][0]["text"] for item in body["output"]] == [""]
    events = events_of(post(stack, stream=True))
    assert kinds(events) == [*TEXT_EVENTS, *TEXT_END, "response.completed"]


def test_the_sdk_reads_every_shape(stack):
    client = sdk(stack)
    stack.fake.script.output_texts = ["Hi", " you"]
    whole = client.responses.create(model="m", input="hello")
    assert whole.output_text == "Hi you" and whole.status == "completed" and whole.max_output_tokens is None
    streamed = list(client.responses.create(model="m", input="hello", stream=True))
    assert "".join(event.delta for event in streamed if event.type == "response.output_text.delta") == "Hi you"
    with client.responses.stream(model="m", input="hello") as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "Hi you"
    assert client.responses.retrieve(final.id).output_text == "Hi you"
    client.responses.delete(final.id)
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.responses.retrieve(final.id)


# Function calls.

@pytest.mark.parametrize("split", splits(CALL), ids=lambda split: f"{len(split)}-tokens")
def test_call_arguments_stream_in_fragments_that_join_exactly(stack, split):
    stack.fake.script.output_texts = split
    events = events_of(post(stack, tools=[WEATHER], tool_choice="required", stream=True, max_output_tokens=None))
    assert kinds(events)[:3] + kinds(events)[-3:] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    added = events[2]["item"]
    assert added["type"] == "function_call" and added["id"].startswith("fc_") and added["call_id"].startswith("call_")
    assert (added["name"], added["arguments"], added["status"]) == ("get_weather", "", "in_progress")
    fragments = events[3:-3]
    assert all(event["type"] == "response.function_call_arguments.delta" and event["item_id"] == added["id"]
               for event in fragments)
    assert "".join(event["delta"] for event in fragments) == ARGUMENTS == events[-3]["arguments"]
    assert events[-1]["response"]["output"] == [events[-2]["item"]] == [
        {**added, "arguments": ARGUMENTS, "status": "completed"}]
    stack.fake.script.output_texts = split
    whole = checked(post(stack, tools=[WEATHER], tool_choice="required", max_output_tokens=None).json())
    [call] = whole["output"]
    assert (call["type"], call["name"], call["arguments"], call["status"]) == (
        "function_call", "get_weather", ARGUMENTS, "completed")


def test_a_call_cut_by_max_output_tokens_is_incomplete(stack):
    stack.fake.script.output_texts = pieces(CALL, [10, 30, 50])
    body = checked(post(stack, tools=[WEATHER], tool_choice="required", max_output_tokens=3).json())
    [call] = body["output"]
    assert body["status"] == "incomplete" and call["status"] == "incomplete"
    assert call["arguments"] == CALL[len('{"name": "get_weather", "arguments": '):50]


def test_parallel_calls_are_items_of_their_own(stack):
    second = CALL.replace("get_weather", "get_time").replace(ARGUMENTS, "{}")
    stack.fake.script.output_texts = pieces(CALL + "\n" + second, [7, 40, len(CALL) + 3])
    time_tool = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
    events = events_of(post(stack, tools=[WEATHER, time_tool], tool_choice="required", stream=True,
                            max_output_tokens=None))
    output = events[-1]["response"]["output"]
    assert [(item["name"], item["arguments"], item["status"]) for item in output] == [
        ("get_weather", ARGUMENTS, "completed"), ("get_time", "{}", "completed")]
    assert len({item["call_id"] for item in output}) == 2
    added = [event for event in events if event["type"] == "response.output_item.added"]
    assert [event["output_index"] for event in added] == [0, 1]


def test_auto_may_answer_in_text(stack):
    stack.fake.script.output_texts = list('{"name": "no_tool", "arguments": {"content": "Hi there"}}')
    body = checked(post(stack, tools=[WEATHER], max_output_tokens=None).json())
    assert [item["type"] for item in body["output"]] == ["message"]
    assert body["output"][0]["content"][0]["text"] == "Hi there"


def test_tools_and_choices_become_chats(stack):
    short = {"tools": [WEATHER], "max_output_tokens": 5}  # the fake ignores grammars: its words are no call
    assert post(stack, **short, tool_choice={"type": "function", "name": "get_weather"}).status_code == 200
    assert sent_schema(stack)["properties"]["name"] == {"const": "get_weather"}
    assert post(stack, **short, tool_choice="none").status_code == 200 and sent_schema(stack) is None
    body = post(stack, **short, tool_choice="required", parallel_tool_calls=False).json()
    assert sent_schema(stack)["properties"]["arguments"] == WEATHER["parameters"]
    assert body["tools"] == [{**WEATHER, "strict": True}] and body["parallel_tool_calls"] is False
    assert body["tool_choice"] == "required"


def test_the_sdk_stream_helper_reassembles_a_call(stack):
    stack.fake.script.output_texts = pieces(CALL, [2, 9, 20, 33, 34, 47, 60])
    with sdk(stack).responses.stream(model="m", input="weather?", tools=[WEATHER], tool_choice="required") as stream:
        final = stream.get_final_response()
    [call] = final.output
    assert (call.type, call.name, call.arguments) == ("function_call", "get_weather", ARGUMENTS)


# The prompt.

HISTORY = [{"role": "user", "content": "weather?"},
           {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
           {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
           {"role": "developer", "content": [{"type": "input_text", "text": "be "}, {"type": "input_text",
                                                                                      "text": "brief"}]}]


def test_items_render_as_chat_messages():
    assert to_messages(parse_input(HISTORY), "rules") == [
        {"role": "system", "content": "rules"}, {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}, {"role": "system", "content": "be brief"}]
    text_then_calls = [{"role": "assistant", "content": [{"type": "output_text", "text": "Let me see"}]},
                       HISTORY[1], {**HISTORY[1], "call_id": "call_2"}]
    [message] = to_messages(parse_input(text_then_calls), None)
    assert message["content"] == "Let me see" and [call["id"] for call in message["tool_calls"]] == ["call_1",
                                                                                                     "call_2"]


def test_history_reaches_the_shard_as_chat_renders_it(stack):
    assert post(stack, input=HISTORY, tools=[WEATHER], max_output_tokens=5).status_code == 200
    chat = requests.post(stack.url + "/v1/chat/completions", timeout=10, json={"max_tokens": 5,
        "messages": [{"role": "user", "content": "weather?"},
                     {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                      "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                     {"role": "system", "content": "be brief"}],
        "tools": [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]})
    assert chat.status_code == 200
    first, second = stack.fake.requests[-2:]
    assert first.input_ids == second.input_ids and first.grammar == second.grammar


def test_previous_response_id_continues_the_conversation(stack):
    stack.fake.script.output_texts = [" the", " cat"]
    first = post(stack, input="hello world", instructions="how do you").json()
    stack.fake.script.output_texts = [" sat"]
    follow_up = checked(post(stack, input=[{"role": "user", "content": "make cheese"}],
                             previous_response_id=first["id"]).json())
    assert follow_up["previous_response_id"] == first["id"] and follow_up["instructions"] is None
    explicit = post(stack, input=[{"role": "user", "content": "hello world"},
                                  {"role": "assistant", "content": " the cat"},
                                  {"role": "user", "content": "make cheese"}])
    assert explicit.status_code == 200
    chained, whole = stack.fake.requests[-2:]
    assert chained.input_ids == whole.input_ids  # the instructions are not carried over, as on OpenAI
    # A chain of three: the second's stored input holds the first turn too.
    third = post(stack, input="on the mat", previous_response_id=follow_up["id"], stream=True)
    assert events_of(third)[-1]["type"] == "response.completed"
    assert len(stack.fake.requests[-1].input_ids) > len(whole.input_ids)


# The store.

def not_found(response: requests.Response, response_id: str, param: str | None = None) -> bool:
    assert response.status_code == 404, response.text
    assert response.json() == {"error": {"message": f"Response with id '{response_id}' not found.",
                                         "type": "invalid_request_error", "param": param, "code": 404},
                               "error_type": "invalid_request_error"}
    return True


def test_get_and_delete_a_stored_response(stack):
    body = post(stack).json()
    url = f"{stack.url}/v1/responses/{body['id']}"
    assert requests.get(url, timeout=5).json() == body
    events = events_of(post(stack, stream=True))
    streamed = events[-1]["response"]
    assert requests.get(f"{stack.url}/v1/responses/{streamed['id']}", timeout=5).json() == streamed
    assert requests.delete(url, timeout=5).json() == {"id": body["id"], "object": "response", "deleted": True}
    assert not_found(requests.get(url, timeout=5), body["id"])
    assert not_found(requests.delete(url, timeout=5), body["id"])
    calls = len(stack.fake.requests)
    assert not_found(post(stack, previous_response_id=body["id"]), body["id"], "previous_response_id")
    assert len(stack.fake.requests) == calls
    assert requests.get(f"{stack.url}/v1/responses/{streamed['id']}?stream=true", timeout=5).status_code == 422


def test_store_false_keeps_nothing(stack):
    body = post(stack, store=False).json()
    assert body["store"] is False
    assert not_found(requests.get(f"{stack.url}/v1/responses/{body['id']}", timeout=5), body["id"])


def test_a_store_turned_off_keeps_nothing(make_stack):
    stack = make_stack(responses_store_max_count=0)
    body = post(stack).json()
    assert body["store"] is False and len(stack.runner.app[RESPONSE_STORE]) == 0
    assert not_found(requests.get(f"{stack.url}/v1/responses/{body['id']}", timeout=5), body["id"])
    assert not_found(post(stack, previous_response_id=body["id"]), body["id"], "previous_response_id")


def test_the_least_recently_used_response_goes_first(make_stack):
    stack = make_stack(responses_store_max_count=2)
    ids = [post(stack).json()["id"] for _ in range(2)]
    assert requests.get(f"{stack.url}/v1/responses/{ids[0]}", timeout=5).status_code == 200  # now the newest use
    ids.append(post(stack).json()["id"])
    status = [requests.get(f"{stack.url}/v1/responses/{response_id}", timeout=5).status_code for response_id in ids]
    assert status == [200, 404, 200]


@pytest.mark.parametrize("setting, value", [("responses_store_max_count", -1), ("responses_store_max_bytes", 0),
                                            ("responses_store_ttl_s", 0.0)])
def test_store_settings_are_checked(setting, value):
    with pytest.raises(ValueError, match=setting):
        RouterConfig(shard_uris=("127.0.0.1:1",), **{setting: value})
    flags = RouterConfig.from_args(["--shard-uri", "a:1", "--responses-store-max-count", "0"],
                                   environ={"RESPONSES_STORE_TTL_S": "5"})
    assert (flags.responses_store_max_count, flags.responses_store_ttl_s) == (0, 5.0)
    assert RouterConfig(shard_uris=("a:1",)).responses_store_max_bytes == 64 * 1024 * 1024


def test_the_store_is_bounded_by_bytes_and_age():
    now = [0.0]
    store = ResponseStore(max_count=100, max_bytes=300, ttl_s=10.0, clock=lambda: now[0])
    big = {"id": "resp_a", "text": "x" * 150}
    assert store.put(big, ()) and store.put({**big, "id": "resp_b"}, ())
    assert store.get("resp_a") is None and store.get("resp_b") is not None and store.num_bytes <= 300
    assert not store.put({"id": "resp_huge", "text": "x" * 400}, ())  # alone over the bound: not kept
    assert store.get("resp_b") is not None and len(store) == 1
    now[0] = 5.0
    assert store.put({"id": "resp_c"}, ({"type": "message", "role": "user", "content": "hi"},))
    now[0] = 10.5  # resp_b (made at 0) is past its age, resp_c (made at 5) is not
    assert store.get("resp_b") is None and store.get("resp_c") is not None
    assert store.num_bytes == store.get("resp_c").size and store.delete("resp_c") and store.num_bytes == 0
    assert not ResponseStore(0, 300, 10.0).put({"id": "resp_d"}, ())


# Refused input.

REFUSED = [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "built-in tools (`web_search`) are not supported"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["x"]}]}, "tools[0].type", "built-in tools"),
    ({"background": True}, "background", "`background` is not supported"),
    ({"reasoning": {"effort": "high"}}, "reasoning", "`reasoning` is not supported"),
    ({"include": ["message.output_text.logprobs"]}, "include", "`include` is not supported"),
    ({"truncation": "auto"}, "truncation", "`truncation` is not supported"),
    ({"top_logprobs": 2}, "top_logprobs", "`top_logprobs` is not supported"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type", "items of type `reasoning`"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]},
     "input[0].content[0].type", "content of type `input_image` is not supported"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice", "`file_search` is not supported"),
    ({"text": {"verbosity": "high"}}, "text.verbosity", "`text.verbosity` `high` is not supported"),
    ({"metadata": {str(n): "v" for n in range(17)}}, "metadata", "at most 16 pairs"),
    ({"metadata": {"k" * 65: "v"}}, "metadata", "keys are at most 64"),
    ({"metadata": {"k": "v" * 513}}, "metadata", "values are strings of at most 512"),
    ({"text": {"format": {"type": "json_object"}}, "tools": [WEATHER]}, "text.format", "cannot be used with `tools`"),
    ({"max_output_tokens": 0}, "max_output_tokens", "strictly positive"),
    ({"temperature": 2.5}, "temperature", "must be >= 0 and <= 2"),
]
MALFORMED = [
    ({"input": None}, "missing field `input`"), ({"input": 3}, "input: invalid type: integer `3`"),
    ({"input": []}, "`input` cannot be empty"), ({"input": [{"content": "x"}]}, "input[0]: missing field `type`"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role: unknown variant `robot`"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0]: missing field `call_id`"),
    ({"tools": [{"type": "function"}]}, "tools[0]: missing field `name`"),
    ({"tools": [{"type": "function", "name": "f", "parameters": [1]}]}, "tools[0].parameters: invalid type"),
    ({"tool_choice": "sometimes", "tools": [WEATHER]}, "tool_choice: unknown variant `sometimes`"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format: missing field `name`"),
    ({"store": "yes"}, "store: invalid type"), ({"metadata": {"k": 1}}, "metadata.k: invalid type"),
]


@pytest.mark.parametrize("extra, param, message", REFUSED)
def test_unsupported_or_out_of_bounds_fields_are_refused_by_name(stack, extra, param, message):
    response = post(stack, **extra)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["param"] == param and error["code"] == 422
    assert stack.fake.requests == []


@pytest.mark.parametrize("extra, message", MALFORMED)
def test_malformed_bodies_are_422_naming_the_problem(stack, extra, message):
    response = post(stack, **extra)
    assert response.status_code == 422 and message in response.json()["error"]["message"], response.text
    assert stack.fake.requests == []


def test_text_format_sends_the_schema(stack):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    stack.fake.script.output_texts = ['{"city":', ' "Paris"}']
    body = checked(post(stack, text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                                                "strict": True}}).json())
    assert sent_schema(stack) == schema
    assert body["text"]["format"] == {"type": "json_schema", "name": "city", "schema": schema, "strict": True,
                                      "description": None}
    assert json.loads(body["output"][0]["content"][0]["text"]) == {"city": "Paris"}
    assert post(stack, text={"format": {"type": "json_object"}}).status_code == 200
    assert sent_schema(stack) == {"type": "object"}


# Admission, failures, drains, keep-alive and disconnects.

def test_a_full_router_answers_429_before_any_header(make_stack):
    stack = make_stack(max_concurrent_requests=1)
    stack.fake.script.block = True
    stack.fake.script.output_texts = ["a"]
    held = RawHttp(stack.url, "/v1/responses", {"model": "m", "input": "hello", "stream": True})
    assert wait_until(lambda: stack.fake.num_active == 1)
    response = post(stack, stream=True)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert response.json()["error"]["message"] == "Model is overloaded" and response.json()["error"]["code"] == 429
    stack.fake.script.block = False
    assert b"event: response.completed" in held.read_until(b"event: response.completed")
    held.close()


def test_a_failure_mid_stream_ends_with_response_failed(stack):
    stack.fake.script.fail_after = 2
    events = events_of(post(stack, stream=True))
    assert kinds(events) == [*TEXT_EVENTS, "response.output_text.delta", "response.output_text.delta",
                             "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert "scripted failure" in failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == " the cat"  # the output so far
    assert not_found(requests.get(f"{stack.url}/v1/responses/{failed['id']}", timeout=5), failed["id"])
    stack.fake.script.fail_after = 0
    response = post(stack)
    assert response.status_code == 424 and "scripted failure" in response.json()["error"]["message"]


def test_a_drain_ends_a_running_stream_with_response_failed(make_stack):
    stack = make_stack(graceful_shutdown_timeout_s=0.1)
    body = post(stack).json()  # made before the drain, read during it
    stack.fake.script.block = True
    done = []
    thread = threading.Thread(target=lambda: done.append(post(stack, stream=True)))
    thread.start()
    assert wait_until(lambda: stack.fake.num_active == 1)
    stack.loop.loop.call_soon_threadsafe(stack.runner.app[DRAIN].begin, 0.1)
    thread.join(5)
    events = events_of(done[0])
    assert events[-1]["type"] == "response.failed"
    assert "shut down" in events[-1]["response"]["error"]["message"]
    assert post(stack).status_code == 503
    assert requests.get(f"{stack.url}/v1/responses/{body['id']}", timeout=5).status_code == 200


def test_keep_alive_comments_do_not_disturb_the_sdk(make_stack):
    stack = make_stack(keep_alive_interval_s=0.05)
    stack.fake.script.token_delay_s = 0.25
    stack.fake.script.output_texts = ["a", "b"]
    response = post(stack, stream=True)
    assert response.content.count(b":\n\n") >= 3
    assert "".join(event["delta"] for event in events_of(response) if "delta" in event) == "ab"
    stack.fake.script.output_texts = ["a", "b"]
    assert sdk(stack).responses.create(model="m", input="hi", stream=False).output_text == "ab"


def test_a_client_leaving_cancels_the_shard_call(stack):
    stack.fake.script.token_delay_s = 0.02
    client = RawHttp(stack.url, "/v1/responses", {"model": "m", "input": "hello", "stream": True,
                                                  "max_output_tokens": 200})
    client.read_until(b"event: response.output_text.delta", count=3)
    client.close()
    assert wait_until(lambda: stack.fake.cancelled == [call.request_id for call in stack.fake.requests], 1.0)
    assert wait_until(lambda: stack.state.admission.num_in_flight == 0, 1.0)


# GET /v1/responses/{id}/input_items.

def input_items(stack, response_id: str, **query) -> requests.Response:
    return requests.get(f"{stack.url}/v1/responses/{response_id}/input_items", params=query, timeout=5)


def test_input_items_list_the_whole_conversation_in_openai_shapes(stack):
    stack.fake.script.output_texts = [" the", " cat"]
    first = post(stack, input=HISTORY, instructions="rules").json()
    follow_up = post(stack, input="more", previous_response_id=first["id"]).json()
    listed = input_items(stack, follow_up["id"], order="asc").json()
    types.ResponseItemList.model_validate(listed)
    data = listed["data"]
    assert [item["type"] for item in data] == ["message", "function_call", "function_call_output", "message",
                                               "message", "message"]
    assert all(item["status"] == "completed" for item in data) and len({item["id"] for item in data}) == 6
    assert [item["id"].split("_")[0] for item in data] == ["msg", "fc", "fco", "msg", "msg", "msg"]
    # The earlier turn under the ids it had: its input as listed for it, its output item as answered.
    assert data[:4] == input_items(stack, first["id"], order="asc").json()["data"]
    assert data[4] == {"id": first["output"][0]["id"], "type": "message", "status": "completed",
                       "role": "assistant", "content": [{"type": "output_text", "text": " the cat",
                                                         "annotations": [], "logprobs": []}]}
    assert data[1] == {"id": data[1]["id"], "type": "function_call", "status": "completed", "call_id": "call_1",
                       "name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert data[2] == {"id": data[2]["id"], "type": "function_call_output", "status": "completed",
                       "call_id": "call_1", "output": "sunny"}
    # The parts of a message are joined, as the prompt read them.
    assert data[3]["role"] == "developer" and data[3]["content"] == [{"type": "input_text", "text": "be brief"}]
    assert data[5]["content"] == [{"type": "input_text", "text": "more"}]  # instructions are no item
    assert (listed["first_id"], listed["last_id"], listed["has_more"]) == (data[0]["id"], data[-1]["id"], False)


def test_input_items_pages_by_order_limit_and_after(stack):
    body = post(stack, input=[{"role": "user", "content": str(n)} for n in range(5)]).json()
    newest_first = input_items(stack, body["id"]).json()  # desc by default, 20 a page
    assert [item["content"][0]["text"] for item in newest_first["data"]] == ["4", "3", "2", "1", "0"]
    ids = [item["id"] for item in newest_first["data"]]
    page = input_items(stack, body["id"], limit=2, after=ids[1]).json()
    assert [item["id"] for item in page["data"]] == ids[2:4] and page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (ids[2], ids[3])
    last = input_items(stack, body["id"], limit=2, after=ids[3]).json()
    assert [item["id"] for item in last["data"]] == ids[4:] and last["has_more"] is False
    empty = input_items(stack, body["id"], after=ids[4]).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    # The SDK's auto-paging follows `after` through every page.
    client = sdk(stack)
    assert [item.id for item in client.responses.input_items.list(body["id"], limit=2, order="asc")] == ids[::-1]


def test_items_keep_their_own_ids_unless_taken(stack):
    sent = [{"type": "message", "id": "msg_mine", "role": "user", "content": "a"},
            {"type": "message", "id": "msg_mine", "role": "assistant", "content": "b"}]
    body = post(stack, input=sent).json()
    ids = [item["id"] for item in input_items(stack, body["id"], order="asc").json()["data"]]
    assert ids[0] == "msg_mine" and ids[1].startswith("msg_") and ids[1] != "msg_mine"
    assert post(stack, input=[{"role": "user", "content": "a", "id": 3}]).status_code == 422


@pytest.mark.parametrize("query, param", [({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                                          ({"limit": "ten"}, "limit"), ({"order": "up"}, "order"),
                                          ({"after": "msg_unknown"}, "after"), ({"before": "msg_1"}, "before"),
                                          ({"include": "message.output_text.logprobs"}, "include")])
def test_input_items_refuse_a_bad_query_by_name(stack, query, param):
    response = input_items(stack, post(stack).json()["id"], **query)
    assert response.status_code == 422 and response.json()["error"]["param"] == param, response.text


def test_input_items_of_an_unknown_or_deleted_response_are_404(stack):
    assert not_found(input_items(stack, "resp_unknown"), "resp_unknown")
    body = post(stack).json()
    assert input_items(stack, body["id"]).status_code == 200
    assert requests.delete(f"{stack.url}/v1/responses/{body['id']}", timeout=5).status_code == 200
    assert not_found(input_items(stack, body["id"]), body["id"])
    with pytest.raises(openai.NotFoundError):
        sdk(stack).responses.input_items.list(body["id"])
    unstored = post(stack, store=False).json()
    assert not_found(input_items(stack, unstored["id"]), unstored["id"])
