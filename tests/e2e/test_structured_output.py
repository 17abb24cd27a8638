"""Structured output on the real stack (router + shard + SmolLM2), through the clients people
use, unchanged: the openai SDK's `chat.completions.parse` with pydantic models,
huggingface_hub's text_generation (`grammar`) and chat_completion (`response_format`), and
the text_generation package's Client. Every answer must parse and validate against its
JSON Schema (jsonschema), or fullmatch its regex, streamed or not, for several shapes:
nested objects, arrays, enums, required fields, bounded numbers and strings. Strings and
arrays are bounded so that even a small model's answer completes well within max_tokens."""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Annotated

import jsonschema
import pydantic
import pytest
from text_generation import Client
from text_generation.types import Grammar, GrammarType

MAX_TOKENS = 300
PROMPT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=30)
    country: str = pydantic.Field(max_length=30)


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=30)
    age: int = pydantic.Field(ge=0, le=120)
    address: Address
    favorite_color: Color


class Pantry(pydantic.BaseModel):
    fruits: list[Annotated[str, pydantic.Field(max_length=20)]] = pydantic.Field(min_length=1, max_length=4)
    in_stock: bool


SCHEMAS = {
    "nested": {"type": "object", "required": ["title", "author"], "additionalProperties": False, "properties": {
        "title": {"type": "string", "maxLength": 40},
        "author": {"type": "object", "required": ["name", "born"], "additionalProperties": False, "properties": {
            "name": {"type": "string", "maxLength": 30}, "born": {"type": "integer", "minimum": 1000,
                                                                  "maximum": 2025}}}}},
    "array_of_objects": {"type": "object", "required": ["steps"], "additionalProperties": False, "properties": {
        "steps": {"type": "array", "minItems": 2, "maxItems": 3, "items": {
            "type": "object", "required": ["order", "text"], "additionalProperties": False, "properties": {
                "order": {"type": "integer", "minimum": 1, "maximum": 3},
                "text": {"type": "string", "maxLength": 40}}}}}},
    "enum_and_boolean": {"type": "object", "required": ["answer", "confident"], "additionalProperties": False,
                         "properties": {"answer": {"enum": ["yes", "no", "maybe"]},
                                        "confident": {"type": "boolean"}}},
    "optional_field": {"type": "object", "required": ["capital"], "additionalProperties": False, "properties": {
        "capital": {"type": "string", "maxLength": 30},
        "population_millions": {"type": "number", "minimum": 0, "maximum": 100}}},
}
QUESTIONS = {
    "nested": "Name a famous novel and its author, as JSON.",
    "array_of_objects": "Give the steps to boil an egg, as JSON.",
    "enum_and_boolean": "Is the sky blue? Answer as JSON.",
    "optional_field": "What is the capital of France? Answer as JSON.",
}
REGEXES = {
    "phone": (r"\d{3}-\d{3}-\d{4}", "Write a US phone number."),
    "date": (r"(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])", "When did the Berlin wall fall?"),
    "choice": (r"(yes|no)", "Is Paris in France? Answer yes or no."),
    "word": (r"[A-Z][a-z]{2,12}", "Name a planet."),
}


def check_json(text: str, schema: dict) -> dict:
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


@pytest.mark.parametrize("model, question", [
    (Person, "Describe a fictional person, with their address and favorite color."),
    (Pantry, "List a few fruits in my pantry and say whether they are in stock."),
    (Address, "Where is the Eiffel tower?"),
])
def test_openai_sdk_parse_with_pydantic_models(sdk, model, question):
    completion = sdk.chat.completions.parse(model="tgi", messages=ask(question), response_format=model,
                                            max_tokens=MAX_TOKENS, temperature=0)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop", message.content
    assert isinstance(message.parsed, model)
    check_json(message.content, model.model_json_schema())


@pytest.mark.parametrize("name", SCHEMAS)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_json_schema(sdk, name, stream):
    schema = SCHEMAS[name]
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    answer = sdk.chat.completions.create(model="tgi", messages=ask(QUESTIONS[name]), max_tokens=MAX_TOKENS,
                                         temperature=0, response_format=response_format, stream=stream)
    if stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in answer if chunk.choices)
    else:
        text = answer.choices[0].message.content
    check_json(text, schema)


def test_json_object_is_an_object_or_the_start_of_one(sdk):
    """Any JSON object bounds no string, so a small model may write one until max_tokens:
    then the answer is the start of an object; when it ends by itself, a whole one."""
    answer = sdk.chat.completions.create(model="tgi", messages=ask(QUESTIONS["enum_and_boolean"]),
                                         max_tokens=48, temperature=0,
                                         response_format={"type": "json_object"})
    text, reason = answer.choices[0].message.content, answer.choices[0].finish_reason
    if reason == "stop":
        check_json(text, {"type": "object"})
    else:
        assert reason == "length" and text.lstrip().startswith("{"), text


def test_openai_sdk_completions_with_a_schema(sdk):
    schema = SCHEMAS["enum_and_boolean"]
    completion = sdk.completions.create(
        model="tgi", prompt=PROMPT.format(QUESTIONS["enum_and_boolean"]), max_tokens=MAX_TOKENS, temperature=0,
        extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}})
    check_json(completion.choices[0].text, schema)


@pytest.mark.parametrize("name", SCHEMAS)
def test_huggingface_hub_text_generation_json(hub, name):
    schema = SCHEMAS[name]
    prompt = PROMPT.format(QUESTIONS[name])
    text = hub.text_generation(prompt, max_new_tokens=MAX_TOKENS, grammar={"type": "json", "value": schema})
    check_json(text, schema)
    events = list(hub.text_generation(prompt, max_new_tokens=MAX_TOKENS, stream=True, details=True,
                                      grammar={"type": "json", "value": json.dumps(schema)}))  # a JSON string
    check_json("".join(event.token.text for event in events if not event.token.special), schema)
    assert events[-1].details.finish_reason == "eos_token"  # the grammar completed, then EOS


@pytest.mark.parametrize("name", REGEXES)
def test_huggingface_hub_text_generation_regex(hub, name):
    pattern, question = REGEXES[name]
    text = hub.text_generation(PROMPT.format(question), max_new_tokens=60,
                               grammar={"type": "regex", "value": pattern})
    assert re.fullmatch(pattern, text), text


@pytest.mark.parametrize("name", ["nested", "array_of_objects"])
def test_huggingface_hub_chat_completion(hub, name):
    schema = SCHEMAS[name]
    # huggingface_hub sends this as TGI's {"type": "json_object", "value": schema}.
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    answer = hub.chat_completion(ask(QUESTIONS[name]), max_tokens=MAX_TOKENS, temperature=0,
                                 response_format=response_format)
    check_json(answer.choices[0].message.content, schema)
    chunks = hub.chat_completion(ask(QUESTIONS[name]), max_tokens=MAX_TOKENS, temperature=0, stream=True,
                                 response_format=response_format)
    check_json("".join(chunk.choices[0].delta.content or "" for chunk in chunks), schema)


def test_text_generation_client(stack_url):
    client = Client(stack_url, timeout=120)
    schema = SCHEMAS["optional_field"]
    prompt = PROMPT.format(QUESTIONS["optional_field"])
    response = client.generate(prompt, max_new_tokens=MAX_TOKENS, grammar=Grammar(type=GrammarType.Json, value=schema))
    check_json(response.generated_text, schema)
    assert response.details.finish_reason == "eos_token"  # the grammar completed, then EOS
    pattern, question = REGEXES["date"]
    tokens = client.generate_stream(PROMPT.format(question), max_new_tokens=60,
                                    grammar=Grammar(type=GrammarType.Regex, value=pattern))
    text = "".join(token.token.text for token in tokens if not token.token.special)
    assert re.fullmatch(pattern, text), text
