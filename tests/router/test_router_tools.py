"""OpenAI tool calling at the router, against the scripted fake shard over real HTTP and
gRPC: the grammar each tool_choice sends the shard; a scripted call's text read back as
`tool_calls`, whole and streamed (its argument fragments joined, by hand and by the openai
SDK, are exactly the final `arguments`, wherever the token boundaries fall); the no_tool
answer as plain content; tools and earlier calls in the prompt; bad input as a 422."""

from __future__ import annotations

import json
import random

import openai
import pytest
import requests

from protos import shard_pb2
from protos.json_layout import JSON_LAYOUT
from router.chat_template import ChatTemplate
from router.openai.schemas import parse_chat
from router.openai.tool_parser import ToolCallParser
from router.openai.tool_prompt import SEVERAL_CALLS_PROMPT, TOOL_PROMPT, prompt_inputs
from tests.router.test_router_openai import sse_chunks

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
MESSAGES = [{"role": "user", "content": "hello"}]
ARGUMENTS = '{"city": "Par\\"is \\u00e9", "unit": "c", "nested": {"a": [1, {"b": "}"}]}}'
CALL = '{"name": "get_weather", "arguments": ' + ARGUMENTS + "}"


@pytest.fixture
def stack(make_stack):
    return make_stack(max_total_tokens=4096)  # the tool prompt takes many of the fake's word tokens


def chat(stack, **body) -> requests.Response:
    return requests.post(stack.url + "/v1/chat/completions",
                         json={"model": "m", "messages": MESSAGES, "max_tokens": 500, **body}, timeout=10)


def sdk(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)


def sent_schema(stack) -> dict | None:
    """The JSON Schema sent; for a Lark grammar, its rules by name, a %json rule as its
    schema (whose layout is checked and dropped)."""
    request = stack.fake.requests[-1]
    if not request.HasField("grammar"):
        return None
    if request.grammar.type == shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA:
        return json.loads(request.grammar.value)
    assert request.grammar.type == shard_pb2.GRAMMAR_TYPE_LARK
    rules = {}
    for line in request.grammar.value.splitlines():
        name, body = line.split(": ", 1)
        if body.startswith("%json "):
            body = json.loads(body.removeprefix("%json "))
            assert body.pop("x-guidance") == JSON_LAYOUT
        rules[name] = body
    return rules


def call_schema(tool: dict) -> dict:
    function = tool["function"]
    return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": function["parameters"]},
            "required": ["name", "arguments"], "additionalProperties": False}


def pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(set(cuts)), len(text)]
    return [text[start:end] for start, end in zip(bounds, bounds[1:]) if end > start]


def splits(text: str) -> list[list[str]]:
    """Token boundaries inside the name, keys, strings and escapes, one per character, and
    several JSON parts in one token."""
    rng = random.Random(7)
    return [list(text), [text], pieces(text, [5, 14, 30, 41, 44, 49, 53]),
            *(pieces(text, rng.sample(range(1, len(text)), 12)) for _ in range(4))]


# The grammar for each tool_choice.

SEVERAL_CALLS = 'call ("\\n" call)*'


def test_required_sends_one_or_more_calls_of_any_tool(stack):
    assert chat(stack, tools=[WEATHER, TIME], tool_choice="required").status_code == 200
    assert sent_schema(stack) == {"start": "calls", "calls": SEVERAL_CALLS,
                                  "call": {"anyOf": [call_schema(WEATHER), call_schema(TIME)]}}
    assert chat(stack, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False).status_code == 200
    assert sent_schema(stack) == {"anyOf": [call_schema(WEATHER), call_schema(TIME)]}


def test_a_named_tool_sends_that_tool_only(stack):
    for choice in ({"type": "function", "function": {"name": "get_time"}}, {"function": {"name": "get_time"}}):
        assert chat(stack, tools=[WEATHER, TIME], tool_choice=choice).status_code == 200
        assert sent_schema(stack) == call_schema(TIME)


def test_a_tool_named_like_a_mode_is_called_by_name(stack):
    tools = [{"type": "function", "function": {"name": name}} for name in ("auto", "required", "none")]
    for tool in tools:
        choice = {"type": "function", "function": {"name": tool["function"]["name"]}}
        assert chat(stack, tools=tools, tool_choice=choice).status_code == 200
        assert sent_schema(stack) == call_schema({"function": {**tool["function"], "parameters": {
            "type": "object", "properties": {}, "additionalProperties": False}}})


def test_auto_adds_no_tool_and_is_the_default(stack):
    for extra in ({"tool_choice": "auto"}, {}, {"parallel_tool_calls": True}):
        assert chat(stack, tools=[WEATHER], **extra).status_code == 200
        rules = sent_schema(stack)
        assert (rules["start"], rules["calls"], rules["call"]) == ("calls | no_tool", SEVERAL_CALLS,
                                                                   call_schema(WEATHER))
        assert rules["no_tool"]["properties"]["name"] == {"const": "no_tool"}
        assert rules["no_tool"]["properties"]["arguments"]["required"] == ["content"]
    assert chat(stack, tools=[WEATHER], parallel_tool_calls=False).status_code == 200
    schema = sent_schema(stack)
    assert schema["anyOf"][0] == call_schema(WEATHER)
    assert schema["anyOf"][1]["properties"]["name"] == {"const": "no_tool"}


def test_none_and_no_tools_send_no_grammar(stack):
    assert chat(stack, tools=[WEATHER], tool_choice="none").status_code == 200
    assert sent_schema(stack) is None
    assert chat(stack, tool_choice="auto", tools=[]).status_code == 200
    assert sent_schema(stack) is None


def test_missing_parameters_mean_no_arguments(stack):
    tool = {"type": "function", "function": {"name": "ping"}}
    assert chat(stack, tools=[tool], tool_choice="required", parallel_tool_calls=False).status_code == 200
    assert sent_schema(stack)["properties"]["arguments"] == {"type": "object", "properties": {},
                                                             "additionalProperties": False}


# Reading the call back.

def test_the_answer_holds_the_call(stack):
    stack.fake.script.output_texts = pieces(CALL, [3, 12, 40])
    body = chat(stack, tools=[WEATHER], tool_choice="required").json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": ARGUMENTS}
    assert body["usage"]["completion_tokens"] == 5  # four pieces and EOS


@pytest.mark.parametrize("split", splits(CALL), ids=lambda split: f"{len(split)}-tokens")
def test_streamed_fragments_join_to_the_arguments(stack, split):
    stack.fake.script.output_texts = split
    chunks = sse_chunks(chat(stack, tools=[WEATHER], tool_choice="required", stream=True,
                             stream_options={"include_usage": True}))
    calls = [call for chunk in chunks for choice in chunk["choices"] for call in choice["delta"].get("tool_calls", [])]
    first = calls[0]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert all("id" not in call and "name" not in call["function"] for call in calls[1:])
    assert "".join(call["function"]["arguments"] for call in calls) == ARGUMENTS
    assert [choice["finish_reason"] for choice in chunks[-2]["choices"]] == ["tool_calls"]
    assert chunks[-1]["usage"]["completion_tokens"] == len(split) + 1
    assert all("content" not in choice["delta"] for chunk in chunks for choice in chunk["choices"])


def test_several_tokens_in_one_event(stack):
    # The stop string's start holds `"Par` back until `is` shows it is none: one event then.
    stack.fake.script.output_texts = pieces(CALL, [46, 47, 50, 54])
    response = chat(stack, tools=[WEATHER], tool_choice="required", stream=True, stop=['"Parx'])
    calls = [call for chunk in sse_chunks(response) for call in chunk["choices"][0]["delta"].get("tool_calls", [])]
    assert "".join(call["function"]["arguments"] for call in calls) == ARGUMENTS
    assert any(call["function"]["arguments"].startswith('"Par\\"is') for call in calls)


def test_the_openai_sdk_reassembles_the_stream(stack):
    client = sdk(stack)
    stack.fake.script.output_texts = pieces(CALL, [2, 9, 20, 33, 34, 47, 60])
    with client.chat.completions.stream(model="m", messages=MESSAGES, tools=[WEATHER],
                                        tool_choice="required") as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", ARGUMENTS)
    assert final.choices[0].finish_reason == "tool_calls"
    stack.fake.script.output_texts = list(CALL)
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER], stream=True))
    arguments = "".join(call.function.arguments or "" for chunk in chunks for choice in chunk.choices
                        for call in choice.delta.tool_calls or [])
    assert arguments == ARGUMENTS
    whole = client.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER], tool_choice="required")
    assert whole.choices[0].message.tool_calls[0].function.arguments == ARGUMENTS


NO_TOOL = '{"name": "no_tool", "arguments": {"content": "Hi \\"you\\" \\ud83d\\ude00 \\\\ done"}}'


@pytest.mark.parametrize("split", splits(NO_TOOL), ids=lambda split: f"{len(split)}-tokens")
def test_auto_can_answer_in_text(stack, split):
    stack.fake.script.output_texts = split
    choice = chat(stack, tools=[WEATHER]).json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": 'Hi "you" 😀 \\ done'}
    assert choice["finish_reason"] == "stop"
    chunks = sse_chunks(chat(stack, tools=[WEATHER], stream=True))
    deltas = [choice["delta"] for chunk in chunks for choice in chunk["choices"]]
    assert "".join(delta.get("content", "") for delta in deltas) == 'Hi "you" 😀 \\ done'
    assert not any("tool_calls" in delta for delta in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_call_cut_by_max_tokens_ends_by_length(stack):
    stack.fake.script.output_texts = pieces(CALL, [10, 30, 50])
    choice = chat(stack, tools=[WEATHER], tool_choice="required", max_tokens=3).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == CALL[len('{"name": "get_weather", '
                                                                                   '"arguments": '):50]


def test_logprobs_and_seed_still_work(stack):
    stack.fake.script.output_texts = pieces(CALL, [10, 30])
    body = chat(stack, tools=[WEATHER], tool_choice="required", logprobs=True, top_logprobs=2, seed=5,
                temperature=0.5).json()
    assert len(body["choices"][0]["logprobs"]["content"]) == 4
    assert stack.fake.requests[-1].sampling.seed == 5
    chunks = sse_chunks(chat(stack, tools=[WEATHER], tool_choice="required", logprobs=True, stream=True))
    assert sum(len((choice["logprobs"] or {}).get("content", [])) for chunk in chunks
               for choice in chunk["choices"]) == 4


def test_parser_handles_text_that_is_no_call():
    parser = ToolCallParser()
    events = parser.feed("just words") + parser.finish()
    assert [(event.kind, event.text) for event in events] == [("content", "just words")]
    assert not parser.called_tool


# The prompt.

ASSISTANT_CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
TOOL_RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
HISTORY = [{"role": "user", "content": "weather?"}, ASSISTANT_CALL, TOOL_RESULT]


def test_the_default_prompt_shows_the_tools_and_renders_history(stack):
    template = stack.state.chat_template
    request = parse_chat({"messages": HISTORY, "tools": [WEATHER], "tool_choice": "required",
                          "parallel_tool_calls": False})
    prompt = template.render(*prompt_inputs(template, list(request.messages), request.tools))
    assert prompt.startswith('user: weather?\nassistant: {"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                             "user: Result of the tool `get_weather`: sunny\n---\n" + TOOL_PROMPT + "\n[")
    assert json.loads(prompt.split(TOOL_PROMPT + "\n")[1].removesuffix("\nassistant:")) == [WEATHER["function"]]
    several = parse_chat({"messages": HISTORY, "tools": [WEATHER], "tool_choice": "required"})
    prompt = template.render(*prompt_inputs(template, list(several.messages), several.tools))
    assert f"---\n{TOOL_PROMPT}{SEVERAL_CALLS_PROMPT}\n[" in prompt
    assert chat(stack, messages=HISTORY, tools=[WEATHER]).status_code == 200
    none = parse_chat({"messages": HISTORY, "tools": [WEATHER], "tool_choice": "none"})
    assert TOOL_PROMPT not in template.render(*prompt_inputs(template, list(none.messages), none.tools))


TOOL_TEMPLATE = ("{% for tool in tools or [] %}[{{ tool.function.name }}]{% endfor %}"
                 "{% for message in messages %}{{ message.role }}:"
                 "{% for call in message.tool_calls or [] %}{{ call.function.arguments | tojson }}{% endfor %}"
                 "{{ message.content }}|{% endfor %}")


def test_a_template_that_reads_tools_gets_them():
    template = ChatTemplate._load({"chat_template.jinja": TOOL_TEMPLATE.encode()})
    assert template.reads_tools and template.reads_tool_calls
    request = parse_chat({"messages": HISTORY, "tools": [WEATHER, TIME]})  # auto: no_tool is offered too
    prompt = template.render(*prompt_inputs(template, list(request.messages), request.tools))
    assert prompt == '[get_weather][get_time][no_tool]user:weather?|assistant:{"city": "Paris"}|tool:sunny|'


# Bad input.

BAD = [
    ({"tools": {"a": 1}}, "tools: invalid type: map, expected a sequence"),
    ({"tools": [{"type": "function"}]}, "tools[0]: missing field `function`"),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools[0].function: missing field `name`"),
    ({"tools": [{"function": {"name": "a", "parameters": [1]}}]},
     "tools[0].function.parameters: invalid type: sequence, expected a JSON object"),
    ({"tools": [{"type": "retrieval", "function": {"name": "a"}}]}, "only `function` tools are supported"),
    ({"tools": [WEATHER, WEATHER]}, "two tools are named `get_weather`"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice: no tool named `nope`"),
    ({"tool_choice": "required"}, "tool_choice `required` needs `tools`"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice: unknown variant `sometimes`"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls: invalid type"),
    ({"tools": [{"function": {"name": "no_tool"}}]}, "`no_tool` is reserved"),
    ({"tools": [{"function": {"name": "a", "parameters": {"type": "banana"}}}], "tool_choice": "required"},
     "tools is not valid"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "Tool error: Grammar and tools are mutually exclusive"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "x"}]}]}, "tool_calls[0]: missing field `function`"),
    ({"messages": [{"role": "tool", "tool_call_id": 3, "content": "x"}]}, "messages[0].tool_call_id: invalid type"),
]


def test_response_format_with_tools_is_tgis_tool_error(stack):
    """TGI's exact answer; with tool_choice `none` the tools drop and response_format holds."""
    response = chat(stack, tools=[WEATHER], response_format={"type": "json_object"})
    assert response.status_code == 422 and response.json()["error_type"] == "tool_error"
    assert response.json()["error"]["message"] == "Tool error: Grammar and tools are mutually exclusive"
    assert chat(stack, tools=[WEATHER], tool_choice="none", response_format={"type": "json_object"}).status_code == 200


@pytest.mark.parametrize("extra, message", BAD)
def test_bad_tools_are_422_naming_the_problem(stack, extra, message):
    num_calls = len(stack.fake.requests)
    response = chat(stack, **extra)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["code"] == 422 and set(error) == {"message", "type", "param", "code"}
    assert len(stack.fake.requests) == num_calls
