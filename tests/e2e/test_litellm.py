"""Tools and structured output on the real stack (router + shard + SmolLM2), through
litellm's `completion`, unchanged, as an OpenAI-compatible provider ("openai/tgi" with
api_base /v1): tool calls for tool_choice required, auto and a named function, with and
without parallel_tool_calls, whole and streamed (the deltas joined by index, and by
litellm's stream_chunk_builder, give the same calls), a two-turn loop with a `tool`
message, and response_format json_schema (a dict, or a pydantic model litellm converts),
whole and streamed. Every call's arguments and every answer must parse and validate
against its schema (jsonschema). Strings and arrays are bounded and objects closed, so that
even a small model's output completes within max_tokens. litellm runs offline: its bundled
cost map, no telemetry."""

from __future__ import annotations

import functools
import json
import os

# Read when litellm is imported: the bundled cost map, and nothing else fetched on its own.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"

import jsonschema  # noqa: E402
import litellm  # noqa: E402
import pydantic  # noqa: E402
import pytest  # noqa: E402

litellm.telemetry = False  # older versions' usage reports (gone in newer ones: then a no-op)
litellm.suppress_debug_info = True

# litellm's own types, as pydantic sees them: fields read the way 2.11 deprecated, ReadOnly items.
pytestmark = [pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
              pytest.mark.filterwarnings("ignore:Items? .* (is|are) using the `ReadOnly` qualifier:UserWarning")]
MAX_TOKENS = 200
SHORT = 60  # for answers that may be text, which nothing bounds
WEATHER_PARAMETERS = {"type": "object", "required": ["city", "unit"], "additionalProperties": False, "properties": {
    "city": {"type": "string", "maxLength": 30}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}
TIME_PARAMETERS = {"type": "object", "required": ["zone"], "additionalProperties": False,
                   "properties": {"zone": {"type": "string", "maxLength": 20}}}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city",
                                      "parameters": WEATHER_PARAMETERS}},
    {"type": "function", "function": {"name": "get_time", "description": "The current time in a time zone",
                                      "parameters": TIME_PARAMETERS}},
]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
# (tool_choice, parallel_tool_calls, whether exactly one call must come)
CHOICES = {"required": ("required", None, False), "auto-one": ("auto", False, True), "named": (NAMED, None, True)}


def choices(*names: str) -> list:
    return [pytest.param(*CHOICES[name], id=name) for name in names]


RESPONSE_SCHEMAS = {
    "nested": {"type": "object", "required": ["title", "author"], "additionalProperties": False, "properties": {
        "title": {"type": "string", "maxLength": 40},
        "author": {"type": "object", "required": ["name", "born"], "additionalProperties": False, "properties": {
            "name": {"type": "string", "maxLength": 30}, "born": {"type": "integer", "minimum": 1000,
                                                                  "maximum": 2025}}}}},
    "list": {"type": "object", "required": ["fruits"], "additionalProperties": False, "properties": {
        "fruits": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string", "maxLength": 20}}}},
    "enum": {"type": "object", "required": ["answer", "confident"], "additionalProperties": False,
             "properties": {"answer": {"enum": ["yes", "no", "maybe"]}, "confident": {"type": "boolean"}}},
}
QUESTIONS = {"nested": "Name a famous novel and its author, as JSON.", "list": "Name a few fruits, as JSON.",
             "enum": "Is the sky blue? Answer as JSON."}


class Place(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    city: str = pydantic.Field(max_length=30)
    country: str = pydantic.Field(max_length=30)


@pytest.fixture(scope="module")
def complete(stack_url):
    """litellm.completion against the stack, greedy and bounded, no retries."""
    return functools.partial(litellm.completion, model="openai/tgi", api_base=stack_url + "/v1", api_key="unused",
                             max_tokens=MAX_TOKENS, temperature=0, num_retries=0, timeout=300)


def check_call(name: str, arguments: str, allowed=tuple(SCHEMAS)) -> dict:
    assert name in allowed
    value = json.loads(arguments)
    jsonschema.validate(value, SCHEMAS[name])
    return value


def allowed_for(tool_choice) -> tuple[str, ...]:
    return (tool_choice["function"]["name"],) if isinstance(tool_choice, dict) else tuple(SCHEMAS)


def tool_arguments(tool_choice, parallel) -> dict:
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    return {"messages": QUESTION, "tools": TOOLS, "tool_choice": tool_choice, **extra}


def joined_calls(chunks) -> list[tuple[str, str]]:
    """Streamed tool-call deltas as (name, arguments) per call, by index: a call's first
    delta has its id and name, the later ones neither."""
    calls: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                if delta.index not in calls:
                    assert delta.id.startswith("call_") and delta.function.name in SCHEMAS
                    calls[delta.index] = [delta.function.name, ""]
                else:
                    assert delta.id is None and not delta.function.name
                calls[delta.index][1] += delta.function.arguments or ""
    assert list(calls) == list(range(len(calls)))
    return [(name, arguments) for name, arguments in calls.values()]


@pytest.mark.parametrize("tool_choice, parallel, one_call", choices("required", "named"))
def test_tool_call(complete, tool_choice, parallel, one_call):
    response = complete(**tool_arguments(tool_choice, parallel))
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    calls = choice.message.tool_calls
    assert len(calls) == 1 if one_call else len(calls) >= 1
    assert len({call.id for call in calls}) == len(calls)
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        check_call(call.function.name, call.function.arguments, allowed_for(tool_choice))
    assert response.usage.completion_tokens > 0


@pytest.mark.parametrize("tool_choice, parallel, one_call", choices("required", "auto-one"))
def test_streamed_tool_call(complete, tool_choice, parallel, one_call):
    chunks = list(complete(**tool_arguments(tool_choice, parallel), stream=True,
                           stream_options={"include_usage": True}))
    calls = joined_calls(chunks)
    assert len(calls) == 1 if one_call else len(calls) >= 1
    for name, arguments in calls:
        check_call(name, arguments, allowed_for(tool_choice))
    assert [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason] \
        == ["tool_calls"]
    built = litellm.stream_chunk_builder(chunks, messages=QUESTION).choices[0].message
    assert [(call.function.name, call.function.arguments) for call in built.tool_calls] == calls


def test_two_turn_tool_loop(complete):
    first = complete(**tool_arguments(NAMED, None)).choices[0].message
    [call] = first.tool_calls
    check_call(call.function.name, call.function.arguments)
    messages = [*QUESTION, first.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})}]
    # One call at most on the second turn, which ends well within a shorter max_tokens (a
    # text answer may not, then it is cut there).
    choice = complete(messages=messages, tools=TOOLS, tool_choice="auto", parallel_tool_calls=False,
                      max_tokens=SHORT).choices[0]
    if choice.message.tool_calls:  # auto may call again; the call must still be a valid one
        assert choice.finish_reason == "tool_calls"
        [again] = choice.message.tool_calls
        check_call(again.function.name, again.function.arguments)
    else:
        assert choice.finish_reason in ("stop", "length") and choice.message.content


@pytest.mark.parametrize("name, stream", [("nested", False), ("list", False), ("enum", False), ("nested", True),
                                          ("enum", True)])
def test_response_format_json_schema(complete, name, stream):
    schema = RESPONSE_SCHEMAS[name]
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    response = complete(messages=[{"role": "user", "content": QUESTIONS[name]}], response_format=response_format,
                        stream=stream)
    if stream:
        chunks = list(response)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        reasons = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    else:
        text, reasons = response.choices[0].message.content, [response.choices[0].finish_reason]
    assert reasons == ["stop"], text
    jsonschema.validate(json.loads(text), schema)


def test_response_format_pydantic_model(complete):
    response = complete(messages=[{"role": "user", "content": "Where is the Eiffel tower?"}], response_format=Place)
    assert response.choices[0].finish_reason == "stop"
    Place.model_validate_json(response.choices[0].message.content)
    jsonschema.validate(json.loads(response.choices[0].message.content), Place.model_json_schema())
