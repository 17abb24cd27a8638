"""Structured output as the clients people use send it, against scripted shards: what the
openai SDK's `parse` (a pydantic model), huggingface_hub's chat_completion and
text_generation, and the text_generation package send reaches the shard as the grammar
they asked for; a bad schema is each client's own validation exception, with our message.
(The scripted shard ignores grammars: tests/e2e/test_structured_output.py checks outputs.)"""

from __future__ import annotations

import json

import openai
import pydantic
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError as HubValidationError
from text_generation import Client
from text_generation.errors import ValidationError as TextGenerationValidationError
from text_generation.types import Grammar, GrammarType

from protos import shard_pb2

MESSAGES = [{"role": "user", "content": "hello"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


class City(pydantic.BaseModel):
    city: str
    population: int


def sent_grammar(stack) -> tuple[int, object]:
    grammar = stack.fake.requests[-1].grammar
    value = grammar.value if grammar.type == shard_pb2.GRAMMAR_TYPE_REGEX else json.loads(grammar.value)
    return grammar.type, value


def test_openai_sdk_parse_sends_the_models_strict_schema(stack):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)
    stack.fake.script.eos_after = 2  # so the SDK parses the answer (it refuses one cut by length)
    # The scripted shard's words are no City: parsing the answer fails, after the request went out.
    with pytest.raises(pydantic.ValidationError):
        client.chat.completions.parse(model="tgi", messages=MESSAGES, max_tokens=3, response_format=City)
    grammar_type, schema = sent_grammar(stack)
    assert grammar_type == shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA
    assert schema["properties"].keys() == {"city", "population"} and schema["additionalProperties"] is False


def test_openai_sdk_shows_a_bad_schema(stack):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "banana"}}}
    with pytest.raises(openai.UnprocessableEntityError, match="response_format is not valid: Invalid type: banana"):
        client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=3, response_format=bad)
    assert stack.fake.requests == []


def test_huggingface_hub_chat_completion_and_text_generation(stack):
    client = InferenceClient(stack.url)
    json_schema = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    client.chat_completion(MESSAGES, max_tokens=3, response_format=json_schema)  # sent as json_object + value
    assert sent_grammar(stack) == (shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, SCHEMA)
    client.chat_completion(MESSAGES, max_tokens=3, response_format={"type": "json_object"})
    assert sent_grammar(stack) == (shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, {"type": "object"})
    client.text_generation("hello", max_new_tokens=3, grammar={"type": "json", "value": SCHEMA})
    assert sent_grammar(stack) == (shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, SCHEMA)
    list(client.text_generation("hello", max_new_tokens=3, stream=True, grammar={"type": "regex", "value": "[0-9]+"}))
    assert sent_grammar(stack) == (shard_pb2.GRAMMAR_TYPE_REGEX, "[0-9]+")
    with pytest.raises(HubValidationError, match="grammar is not valid: invalid regex: unclosed group"):
        client.text_generation("hello", max_new_tokens=3, grammar={"type": "regex", "value": "("})


def test_text_generation_client(stack):
    client = Client(stack.url)
    client.generate("hello", max_new_tokens=3, grammar=Grammar(type=GrammarType.Json, value=SCHEMA))
    assert sent_grammar(stack) == (shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, SCHEMA)
    list(client.generate_stream("hello", max_new_tokens=3, grammar=Grammar(type=GrammarType.Regex, value="a+")))
    assert sent_grammar(stack) == (shard_pb2.GRAMMAR_TYPE_REGEX, "a+")
    with pytest.raises(TextGenerationValidationError, match="grammar is not valid: Invalid type: banana"):
        client.generate("hello", max_new_tokens=3, grammar=Grammar(type=GrammarType.Json, value={"type": "banana"}))
