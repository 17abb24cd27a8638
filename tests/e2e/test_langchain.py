"""Structured output and tools on the real stack (router + shard + SmolLM2), through
LangChain's ChatOpenAI (langchain-openai), unchanged, pointed at /v1:
`with_structured_output` with each method, json_schema (response_format json_schema),
function_calling (one named tool call) and json_mode (response_format json_object, the
shape told in the prompt), for pydantic models and JSON-schema dicts (nested objects,
lists, enums, required and optional fields), whole and streamed; and `bind_tools`: calls
whose args validate, a round trip with ToolMessages, streamed parallel calls joined by
LangChain's chunks, and tool_choice "none" answering in text. Every result must validate
against its schema (jsonschema, and pydantic for models). Strings and lists are bounded
and objects closed, so that even a small model's answer completes within max_tokens."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Literal

import jsonschema
import pydantic
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI

MAX_TOKENS = 200
SHORT = 60  # for answers that may be text, which nothing bounds
# LangChain keeps the parsed model in additional_kwargs, which its serializer warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")


class Closed(pydantic.BaseModel):
    """additionalProperties false, so the model cannot go on adding keys."""

    model_config = pydantic.ConfigDict(extra="forbid")


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(Closed):
    city: str = pydantic.Field(max_length=30)
    country: str = pydantic.Field(max_length=30)


class Person(Closed):
    """A fictional person"""

    name: str = pydantic.Field(max_length=30)
    age: int = pydantic.Field(ge=0, le=120)
    address: Address
    favorite_color: Color


class Pantry(Closed):
    """The fruits in a pantry"""

    fruits: list[Annotated[str, pydantic.Field(max_length=20)]] = pydantic.Field(min_length=1, max_length=4)
    in_stock: bool


VERDICT = {"title": "verdict", "description": "A short answer", "type": "object",
           "required": ["answer", "confident"], "additionalProperties": False,
           "properties": {"answer": {"type": "string", "enum": ["yes", "no", "maybe"]},
                          "confident": {"type": "boolean"}}}
CAPITAL = {"title": "capital", "description": "A country's capital", "type": "object", "required": ["capital"],
           "additionalProperties": False,
           "properties": {"capital": {"type": "string", "maxLength": 30},
                          "population_millions": {"type": "number", "minimum": 0, "maximum": 100}}}
QUESTIONS = {
    Person: "Describe a fictional person, with their address and favorite color.",
    Pantry: "List a few fruits in my pantry and say whether they are in stock.",
    "verdict": "Is the sky blue?",
    "capital": "What is the capital of France?",
}
# json_mode forces any JSON object: the prompt tells the shape (SmolLM2 needs it by example).
SHAPES = {
    Person: '{"name": "<name>", "age": <number>, "address": {"city": "<city>", "country": "<country>"}, '
            '"favorite_color": "red" or "green" or "blue"}',
    "verdict": '{"answer": "yes" or "no" or "maybe", "confident": true or false}',
}


class get_weather(Closed):
    """The current weather in a city"""

    city: str = pydantic.Field(max_length=30)
    unit: Literal["celsius", "fahrenheit"]


class get_time(Closed):
    """The current time in a time zone"""

    zone: str = pydantic.Field(max_length=20)


TOOLS = {tool.__name__: tool for tool in (get_weather, get_time)}
WEATHER_QUESTION = "What is the weather like in Paris today?"


@pytest.fixture(scope="module")
def llm(stack_url):
    with pytest.MonkeyPatch.context() as patch:  # no LangSmith tracing, whatever the environment says
        for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
            patch.setenv(name, "false")
        patch.delenv("LANGSMITH_API_KEY", raising=False)
        yield ChatOpenAI(base_url=stack_url + "/v1", api_key="unused", model="tgi", temperature=0,
                         max_tokens=MAX_TOKENS, max_retries=0, timeout=300)


def schema_of(schema) -> tuple[str, dict]:
    """The name LangChain gives a schema, and its JSON Schema."""
    if isinstance(schema, dict):
        return schema["title"], schema
    return schema.__name__, schema.model_json_schema()


def check_result(result, schema) -> None:
    if isinstance(schema, dict):
        jsonschema.validate(result, schema)
    else:
        assert isinstance(result, schema), result
        jsonschema.validate(result.model_dump(mode="json"), schema.model_json_schema())


def check_calls(message: AIMessage, allowed=tuple(TOOLS)) -> None:
    """Every call is whole, to an allowed tool, with args its schema takes, and its own id."""
    assert message.tool_calls and not message.invalid_tool_calls, message
    assert len({call["id"] for call in message.tool_calls}) == len(message.tool_calls)
    for call in message.tool_calls:
        assert call["name"] in allowed and call["id"].startswith("call_")
        jsonschema.validate(call["args"], convert_to_openai_tool(TOOLS[call["name"]])["function"]["parameters"])
        TOOLS[call["name"]].model_validate(call["args"])


def key(schema):
    """What QUESTIONS and SHAPES are keyed by: a model's class, a dict's title."""
    return schema["title"] if isinstance(schema, dict) else schema


def ids(value) -> str:
    return value if isinstance(value, str) else schema_of(value)[0]


# Each method with a nested object (and an enum), a list, and required or optional fields.
@pytest.mark.parametrize("method, schema", [
    ("json_schema", Person), ("json_schema", Pantry), ("json_schema", VERDICT),
    ("function_calling", Person), ("function_calling", Pantry), ("function_calling", CAPITAL)], ids=ids)
def test_with_structured_output(llm, method, schema):
    structured = llm.with_structured_output(schema, method=method, include_raw=True)
    output = structured.invoke(QUESTIONS[key(schema)])
    assert output["parsing_error"] is None, output
    check_result(output["parsed"], schema)
    raw = output["raw"]
    if method == "function_calling":  # one call, to the schema's tool
        assert raw.response_metadata["finish_reason"] == "tool_calls"
        [call] = raw.tool_calls
        assert call["name"] == schema_of(schema)[0]
    else:
        assert raw.response_metadata["finish_reason"] == "stop" and not raw.tool_calls
        jsonschema.validate(json.loads(raw.content), schema_of(schema)[1])


@pytest.mark.parametrize("method, schema", [("json_schema", Pantry), ("function_calling", VERDICT)], ids=ids)
def test_streamed_structured_output(llm, method, schema):
    chunks = list(llm.with_structured_output(schema, method=method).stream(QUESTIONS[key(schema)]))
    assert chunks
    check_result(chunks[-1], schema)  # the last chunk is the whole result


@pytest.mark.parametrize("schema", [Person, VERDICT], ids=ids)
def test_json_mode(llm, schema):
    prompt = f"{QUESTIONS[key(schema)]} Answer with only a JSON object of this shape: {SHAPES[key(schema)]}"
    output = llm.with_structured_output(schema, method="json_mode", include_raw=True).invoke(prompt)
    assert output["parsing_error"] is None, output
    assert output["raw"].response_metadata["finish_reason"] == "stop"
    check_result(output["parsed"], schema)


@pytest.mark.parametrize("tool_choice, allowed", [("any", tuple(TOOLS)), ("get_weather", ("get_weather",))])
def test_bind_tools_round_trip(llm, tool_choice, allowed):
    messages = [HumanMessage(WEATHER_QUESTION)]
    first = llm.bind_tools(list(TOOLS.values()), tool_choice=tool_choice).invoke(messages)
    assert first.response_metadata["finish_reason"] == "tool_calls"
    check_calls(first, allowed)
    if tool_choice == "get_weather":  # a named function is one call
        assert len(first.tool_calls) == 1
    results = [ToolMessage(json.dumps({"temperature": 21, "sky": "sunny"}), tool_call_id=call["id"])
               for call in first.tool_calls]
    # The second turn may answer or call again: one call at most, which ends well within a
    # shorter max_tokens (a text answer may not, then it is cut there).
    second = llm.bind_tools(list(TOOLS.values()), parallel_tool_calls=False).bind(max_tokens=SHORT).invoke(
        [*messages, first, *results])
    assert isinstance(second, AIMessage)
    if second.tool_calls:
        assert second.response_metadata["finish_reason"] == "tool_calls" and len(second.tool_calls) == 1
        check_calls(second)
    else:
        assert second.response_metadata["finish_reason"] in ("stop", "length")
        assert isinstance(second.content, str) and second.content


def test_bind_tools_streamed_parallel_calls(llm):
    """Several calls may come (parallel_tool_calls defaults to true), each with its own index
    and id; LangChain joins the chunks into whole calls."""
    bound = llm.bind_tools(list(TOOLS.values()), tool_choice="required", strict=True).bind(stream_usage=True)
    message = None
    for chunk in bound.stream("What is the weather and the time in Paris and in Tokyo?"):
        message = chunk if message is None else message + chunk
    assert message.response_metadata["finish_reason"] == "tool_calls"
    check_calls(message)
    assert message.usage_metadata["output_tokens"] > 0


def test_tool_choice_none_answers_in_text(llm):
    message = llm.bind_tools(list(TOOLS.values()), tool_choice="none").bind(max_tokens=SHORT).invoke("Say hello.")
    assert not message.tool_calls and not message.invalid_tool_calls
    assert isinstance(message.content, str) and message.content
    assert message.response_metadata["finish_reason"] in ("stop", "length")
