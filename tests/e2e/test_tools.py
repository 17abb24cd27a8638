"""Tool calling on the real stack (router + shard + SmolLM2), through the clients people use,
unchanged: the openai SDK, whole and streamed (its stream helper reassembles the calls:
SmolLM2 asked for the weather makes several, one per line, unless parallel_tool_calls is
false or a function is named), a
two-turn agent loop (a call, its result sent back as a `tool` message, then a text
answer), and huggingface_hub's chat_completion. Every call's arguments must parse and
validate against the tool's parameters (jsonschema). Strings are bounded so that even a
small model's call completes well within max_tokens."""

from __future__ import annotations

import json

import jsonschema
import pytest

MAX_TOKENS = 200
WEATHER_PARAMETERS = {"type": "object", "required": ["city", "unit"], "additionalProperties": False, "properties": {
    "city": {"type": "string", "maxLength": 30}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city",
                                      "parameters": WEATHER_PARAMETERS}},
    {"type": "function", "function": {"name": "get_time", "description": "The current time in a time zone",
                                      "parameters": {"type": "object", "required": ["zone"], "additionalProperties": False,
                                                     "properties": {"zone": {"type": "string", "maxLength": 20}}}}},
]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def check_call(name: str, arguments: str | dict, allowed: tuple[str, ...] = tuple(SCHEMAS)) -> dict:
    assert name in allowed
    value = json.loads(arguments) if isinstance(arguments, str) else arguments
    jsonschema.validate(value, SCHEMAS[name])
    return value


def joined_calls(deltas) -> list[tuple[str, str]]:
    """Streamed tool-call deltas as (name, arguments) per call, by index."""
    calls: dict[int, list[str]] = {}
    for delta in deltas:
        if delta.index not in calls:
            assert delta.id.startswith("call_") and delta.function.name in SCHEMAS
            calls[delta.index] = [delta.function.name, ""]
        else:
            assert delta.id is None and delta.function.name is None
        calls[delta.index][1] += delta.function.arguments or ""
    assert list(calls) == list(range(len(calls)))
    return [(name, arguments) for name, arguments in calls.values()]


@pytest.mark.parametrize("tool_choice, parallel, one_call", [
    ("required", None, False), ("required", False, True),
    ({"type": "function", "function": {"name": "get_weather"}}, None, True)])
def test_openai_sdk_tool_call(sdk, tool_choice, parallel, one_call):
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    completion = sdk.chat.completions.create(model="tgi", messages=QUESTION, tools=TOOLS, tool_choice=tool_choice,
                                             max_tokens=MAX_TOKENS, temperature=0, **extra)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert len(calls) == 1 if one_call else len(calls) >= 1
    assert len({call.id for call in calls}) == len(calls)
    allowed = tuple(SCHEMAS) if tool_choice == "required" else ("get_weather",)
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        check_call(call.function.name, call.function.arguments, allowed)
    assert completion.usage.completion_tokens > 0


def test_openai_sdk_streamed_tool_call(sdk):
    chunks = list(sdk.chat.completions.create(model="tgi", messages=QUESTION, tools=TOOLS, tool_choice="required",
                                              max_tokens=MAX_TOKENS, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    calls = joined_calls(call for chunk in chunks for choice in chunk.choices for call in choice.delta.tool_calls or [])
    assert calls
    for name, arguments in calls:
        check_call(name, arguments)
    assert [choice.finish_reason for chunk in chunks for choice in chunk.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens > 0
    # The SDK's stream helper reassembles the same calls.
    with sdk.chat.completions.stream(model="tgi", messages=QUESTION, tools=TOOLS, tool_choice="required",
                                     max_tokens=MAX_TOKENS, temperature=0) as stream:
        final = stream.get_final_completion()
    assert [(call.function.name, call.function.arguments) for call in final.choices[0].message.tool_calls] == calls


@pytest.mark.parametrize("final_choice", ["none", "auto"])
def test_two_turn_agent_loop(sdk, final_choice):
    first = sdk.chat.completions.create(model="tgi", messages=QUESTION, tools=TOOLS,
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                        max_tokens=MAX_TOKENS, temperature=0)
    [call] = first.choices[0].message.tool_calls
    check_call(call.function.name, call.function.arguments)
    messages = [*QUESTION, first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})}]
    second = sdk.chat.completions.create(model="tgi", messages=messages, tools=TOOLS, tool_choice=final_choice,
                                         max_tokens=MAX_TOKENS, temperature=0)
    choice = second.choices[0]
    if choice.message.tool_calls:  # auto may call again; the calls must still be valid ones
        assert final_choice == "auto" and choice.finish_reason == "tool_calls"
        for again in choice.message.tool_calls:
            check_call(again.function.name, again.function.arguments)
    else:
        assert choice.finish_reason in ("stop", "length") and choice.message.content


def test_auto_streams_text_or_a_call(sdk):
    chunks = list(sdk.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "Say hello."}],
                                              tools=TOOLS, tool_choice="auto", max_tokens=120,
                                              temperature=0, stream=True))
    deltas = [choice.delta for chunk in chunks for choice in chunk.choices]
    calls = joined_calls(call for delta in deltas for call in delta.tool_calls or [])
    finish_reason = [choice.finish_reason for chunk in chunks for choice in chunk.choices][-1]
    if calls:
        # SmolLM2 may go on calling until max_tokens: then only the last call is cut.
        assert finish_reason in ("tool_calls", "length")
        for name, arguments in calls[:-1] if finish_reason == "length" else calls:
            check_call(name, arguments)
    else:
        assert "".join(delta.content or "" for delta in deltas)


def test_huggingface_hub_chat_completion_with_tools(hub):
    output = hub.chat_completion(messages=QUESTION, tools=TOOLS, tool_choice="required", max_tokens=MAX_TOKENS,
                                 temperature=0)
    choice = output.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        check_call(call.function.name, call.function.arguments)
