"""Structured output at the router, against scripted shards over real HTTP and gRPC: every
form of TGI's `grammar` and OpenAI's `response_format` reaches the shard as the right
GrammarType and value (a schema as compact JSON text), on every route, streamed or not;
every bad one is a 422 in the route's error shape naming the problem, before any shard
call; the bound on a grammar's length; compiling it off the event loop; and the OpenAPI
document's description of both fields, which must accept what the router accepts."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from openapi_schema_validator import OAS30Validator

from protos import shard_pb2
from router import validation
from router.config import RouterConfig, resolve_limits
from router.docs.openapi import build_document
from router.schemas import GenerateParameters, Grammar
from router.wire import ShardRequest, to_generate_request

JSON, REGEX = shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, shard_pb2.GRAMMAR_TYPE_REGEX
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name"]}
PERSON_TEXT = json.dumps(PERSON, separators=(",", ":"))
ANY_OBJECT = '{"type":"object"}'
PREFIX = "Input validation error: "
CHAT = {"model": "tgi", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
COMPLETION = {"model": "tgi", "prompt": "hello", "max_tokens": 3}

# (path, extra body keys): each TGI route, streamed and not.
TGI_ROUTES = [("/generate", {}), ("/generate_stream", {}), ("/", {"stream": False}), ("/", {"stream": True})]
OPENAI_ROUTES = [(path, body, stream) for stream in (False, True)
                 for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION))]

GRAMMARS = [  # TGI's forms, and what the shard receives
    ({"type": "json", "value": PERSON}, JSON, PERSON_TEXT),
    ({"type": "json", "value": json.dumps(PERSON, indent=2)}, JSON, PERSON_TEXT),  # a JSON string of one
    ({"type": "json_object", "value": PERSON}, JSON, PERSON_TEXT),
    ({"type": "json_schema", "value": {"name": "person", "schema": PERSON}}, JSON, PERSON_TEXT),
    ({"type": "regex", "value": r"\d{3}-\d{4}"}, REGEX, r"\d{3}-\d{4}"),
]
RESPONSE_FORMATS = [  # OpenAI's forms, TGI's GrammarType ones, and what the shard receives
    ({"type": "json_object"}, JSON, ANY_OBJECT),
    ({"type": "json_schema", "json_schema": {"name": "Person", "schema": PERSON, "strict": True}}, JSON, PERSON_TEXT),
    ({"type": "json_schema", "json_schema": {"name": "Person", "schema": PERSON, "strict": False}}, JSON, PERSON_TEXT),
    ({"type": "json_object", "value": PERSON}, JSON, PERSON_TEXT),  # huggingface_hub's rewrite of json_schema
    ({"type": "json", "value": json.dumps(PERSON)}, JSON, PERSON_TEXT),
    ({"type": "json_schema", "value": {"schema": PERSON}}, JSON, PERSON_TEXT),
    ({"type": "regex", "value": "(yes|no)"}, REGEX, "(yes|no)"),
]

BAD_GRAMMARS = [  # what is wrong, and a part of the message that must name it
    ({"type": "banana", "value": "x"}, "parameters.grammar.type: unknown variant `banana`, expected one of "
                                       "`json`, `json_object`, `regex`, `json_schema`"),
    ({"value": "x"}, "parameters.grammar: missing field `type`"),
    ({"type": "json"}, "parameters.grammar: missing field `value`"),
    ({"type": "regex", "value": None}, "parameters.grammar: missing field `value`"),
    ({"type": "json", "value": {"type": "banana"}}, PREFIX + "grammar is not valid: Invalid type: banana"),
    ({"type": "json", "value": {"type": "object", "required": "name"}}, "grammar is not valid: Expected array"),
    ({"type": "json", "value": '{"type": '}, "grammar is not valid: the schema is not JSON: Expecting value"),
    ({"type": "json", "value": "[1, 2]"}, "grammar is not valid: a JSON Schema must be a JSON object"),
    ({"type": "json", "value": 3}, "parameters.grammar.value: invalid type: integer `3`, expected a JSON Schema"),
    ({"type": "regex", "value": "("}, PREFIX + "grammar is not valid: invalid regex: unclosed group"),
    ({"type": "regex", "value": ""}, PREFIX + "`value` cannot be empty for `regex` grammar"),
    ({"type": "regex", "value": ["a"]}, "parameters.grammar.value: invalid type: sequence, expected a string"),
    ({"type": "json_schema", "value": {"name": "x"}}, "parameters.grammar.value: missing field `schema`"),
    ({"type": "json_schema", "value": {"name": 5, "schema": {}}}, "parameters.grammar.value.name: invalid type"),
    ("json", "parameters.grammar: invalid type: string \"json\", expected a JSON object"),
    ({"type": "regex", "value": "a" * 101}, PREFIX + "`grammar` supports grammars of up to 100 characters "
                                                    "(a JSON Schema counts as its compact JSON text). Given: 101"),
    ({"type": "json", "value": {"enum": ["a" * 100]}}, "`grammar` supports grammars of up to 100 characters"),
]
BAD_RESPONSE_FORMATS = [
    ({"type": "banana"}, "response_format.type: unknown variant `banana`, expected one of `text`, `json_object`, "
                         "`json_schema`, `json`, `regex`"),
    ({}, "response_format: missing field `type`"),
    ("json_object", "response_format: invalid type: string \"json_object\", expected a JSON object"),
    ({"type": "json_schema"}, "response_format: missing field `json_schema`"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema: missing field `schema`"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "banana"}}},
     PREFIX + "response_format is not valid: Invalid type: banana"),
    ({"type": "json_schema", "json_schema": {"schema": PERSON, "strict": "yes"}},
     "response_format.json_schema.strict: invalid type"),
    ({"type": "json_object", "value": {"type": "banana"}}, "response_format is not valid: Invalid type: banana"),
    ({"type": "regex", "value": "("}, PREFIX + "response_format is not valid: invalid regex: unclosed group"),
    ({"type": "regex"}, "response_format: missing field `value`"),
    ({"type": "json_schema", "json_schema": {"schema": {"enum": ["a" * 100]}}},
     "`response_format` supports grammars of up to 100 characters"),
]


@pytest.fixture
def short_grammars(make_stack):
    return make_stack(max_grammar_length=100)


def tgi_post(stack, path: str, extra: dict, parameters: dict) -> requests.Response:
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 2, **parameters}, **extra}
    return requests.post(stack.url + path, json=body, timeout=10)


def openai_post(stack, path: str, body: dict, stream: bool, response_format) -> requests.Response:
    return requests.post(stack.url + path, json={**body, "stream": stream, "response_format": response_format},
                         timeout=10)


def sent_grammar(stack) -> shard_pb2.Grammar | None:
    request = stack.fake.requests[-1]
    return request.grammar if request.HasField("grammar") else None


@pytest.mark.parametrize("path, extra", TGI_ROUTES)
@pytest.mark.parametrize("grammar, grammar_type, value", GRAMMARS)
def test_tgi_grammars_reach_the_shard(stack, path, extra, grammar, grammar_type, value):
    response = tgi_post(stack, path, extra, {"grammar": grammar})
    assert response.status_code == 200, response.text
    assert (sent_grammar(stack).type, sent_grammar(stack).value) == (grammar_type, value)


@pytest.mark.parametrize("path, body, stream", OPENAI_ROUTES)
@pytest.mark.parametrize("response_format, grammar_type, value", RESPONSE_FORMATS)
def test_response_formats_reach_the_shard(stack, path, body, stream, response_format, grammar_type, value):
    response = openai_post(stack, path, body, stream, response_format)
    assert response.status_code == 200, response.text
    assert (sent_grammar(stack).type, sent_grammar(stack).value) == (grammar_type, value)


@pytest.mark.parametrize("response_format", [None, {"type": "text"}])
def test_text_and_no_format_send_no_grammar(stack, response_format):
    assert openai_post(stack, "/v1/chat/completions", CHAT, False, response_format).status_code == 200
    assert sent_grammar(stack) is None
    assert tgi_post(stack, "/generate", {}, {"grammar": None}).status_code == 200
    assert sent_grammar(stack) is None


@pytest.mark.parametrize("path, extra", TGI_ROUTES)
@pytest.mark.parametrize("grammar, message", BAD_GRAMMARS)
def test_bad_grammars_are_tgi_422s(short_grammars, path, extra, grammar, message):
    response = tgi_post(short_grammars, path, extra, {"grammar": grammar})
    assert response.status_code == 422 and "chunked" not in response.headers.get("Transfer-Encoding", "")
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == "validation"
    assert message in body["error"], body["error"]
    assert short_grammars.fake.requests == []


@pytest.mark.parametrize("path, body, stream", OPENAI_ROUTES)
@pytest.mark.parametrize("response_format, message", BAD_RESPONSE_FORMATS)
def test_bad_response_formats_are_openai_422s(short_grammars, path, body, stream, response_format, message):
    response = openai_post(short_grammars, path, body, stream, response_format)
    assert response.status_code == 422 and "chunked" not in response.headers.get("Transfer-Encoding", "")
    error = response.json()
    assert error["error_type"] == "validation" and error["error"]["code"] == 422
    assert message in error["error"]["message"], error["error"]["message"]
    assert short_grammars.fake.requests == []


def test_grammars_compile_off_the_event_loop(stack, monkeypatch):
    threads = []

    def recording(grammar, max_length):
        threads.append(threading.current_thread())
        return check(grammar, max_length)

    check = validation.check_grammar
    monkeypatch.setattr(validation, "check_grammar", recording)
    assert tgi_post(stack, "/generate", {}, {"grammar": GRAMMARS[0][0]}).status_code == 200
    assert openai_post(stack, "/v1/completions", COMPLETION, False, {"type": "json_object"}).status_code == 200
    assert len(threads) == 2 and stack.loop._thread not in threads


def test_max_grammar_length_flag():
    config = RouterConfig.from_args(["--shard-uri", "a:1"], environ={})
    assert config.max_grammar_length == 100_000 and resolve_limits(config, 64).max_grammar_length == 100_000
    config = RouterConfig.from_args(["--shard-uri", "a:1"], environ={"MAX_GRAMMAR_LENGTH": "50"})
    assert resolve_limits(config, 64).max_grammar_length == 50
    config = RouterConfig.from_args(["--shard-uri", "a:1", "--max-grammar-length", "7"], environ={})
    assert config.max_grammar_length == 7
    with pytest.raises(ValueError, match="`max_grammar_length` must be > 0"):
        RouterConfig.from_args(["--shard-uri", "a:1", "--max-grammar-length", "0"], environ={})


def test_the_wire_takes_only_checked_grammars():
    def wire(grammar):
        request = ShardRequest("id", "log", (1, 2), GenerateParameters(grammar=grammar), max_new_tokens=2)
        return to_generate_request(request)

    assert not wire(None).HasField("grammar")
    assert wire(Grammar("regex", "a+")).grammar == shard_pb2.Grammar(type=REGEX, value="a+")
    with pytest.raises(TypeError):
        wire(Grammar("json_schema", PERSON))  # a schema object: validation has not run


def _request_validator(schema_name: str, field: str) -> OAS30Validator:
    config = RouterConfig(shard_uris=("a:1",))
    document = build_document(config, resolve_limits(config, 64), (), "0")
    schemas = document["components"]["schemas"]
    properties = schemas[schema_name]["properties"]
    if schema_name == "GenerateRequest":
        properties = properties["parameters"]["properties"]
    return OAS30Validator({**properties[field], "components": document["components"]})


def test_the_document_accepts_every_accepted_form_and_refuses_bad_shapes():
    """The fuzz test sends bodies the document refuses and expects a 4xx: the document may
    be no stricter than the parser, and should refuse what the parser refuses by shape."""
    grammar = _request_validator("GenerateRequest", "grammar")
    response_format = _request_validator("ChatRequest", "response_format")
    for form, _, _ in GRAMMARS:
        grammar.validate(form)
    for form in [form for form, _, _ in RESPONSE_FORMATS] + [{"type": "text"}]:
        response_format.validate(form)
    # The document lets a schema be any JSON value (see router/docs/openapi.py): looser, never stricter.
    shape_errors = [form for form, message in BAD_GRAMMARS
                    if message.startswith("parameters.") and "expected a JSON Schema" not in message]
    assert grammar.is_valid({"type": "json", "value": 3})
    assert shape_errors and not any(grammar.is_valid(form) for form in shape_errors)
    # An empty regex has the right shape (/tokenize takes it unchecked); validation refuses it.
    assert grammar.is_valid({"type": "regex", "value": ""})
    shape_errors = [form for form, message in BAD_RESPONSE_FORMATS if message.startswith("response_format")
                    and "is not valid" not in message]
    assert shape_errors and not any(response_format.is_valid(form) for form in shape_errors)
