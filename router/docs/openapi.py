"""The OpenAPI 3.0 document served at /api-doc/openapi.json (as TGI serves its own), built
from the definitions the router validates with: the parsers' field tables (which fields
exist and their JSON kinds: schemas.PARAMETER_KINDS, openai_schemas.CHAT_FIELDS and
COMPLETION_FIELDS) and the checks' ranges (validation.RANGES, limit_ranges(limits),
openai_schemas.RANGES), with this router's limits filled in. Only the prose is written
by hand (field_descriptions.py), and a field without prose breaks the document (and its
tests), so no field can go undocumented."""

from __future__ import annotations

from router.deadlines import MAX_TIMEOUT_S
from router.priorities import PRIORITIES
from router.config import Limits, RouterConfig
from router.route_table import Route
from router.openai import schemas as openai_schemas
from router.docs.field_descriptions import DESCRIPTIONS
from router.docs.bodies import nullable, ref, response_schemas, sse_event
from router.docs.responses_api import (EXAMPLE as RESPONSES_EXAMPLE, RESPONSES_DESCRIPTIONS, RESPONSES_KINDS,
                                      responses_paths, responses_response_schemas)
from router.openai.responses import schemas as responses_schemas
from router.schemas import INT_BOUNDS, LOGIT_BIAS_RANGE, MAX_LOGIT_BIAS_ENTRIES, PARAMETER_KINDS
from router.validation import RANGES, UNSUPPORTED, Range, limit_ranges
from router.docs.operations import errors as _errors
from router.docs.operations import operation as _op
from router.docs.resume_paths import resume_paths

EXAMPLES = {
    "generate": {"inputs": "My name is Olivier and I", "parameters": {"max_new_tokens": 20, "details": True}},
    "chat": {"model": "tgi", "messages": [{"role": "user", "content": "What is deep learning?"}], "max_tokens": 20},
    "completion": {"model": "tgi", "prompt": "My name is Olivier and I", "max_tokens": 20},
}

# Any JSON value: the router takes a JSON Schema object or JSON text of one, and checks it
# by compiling it (422 otherwise). The example keeps schemathesis's coverage phase from
# drawing arbitrary nested JSON here, deep in a body, where CPython 3.11's parser (which
# Hypothesis calls to describe its strategies) fails with a SystemError.
_EXAMPLE_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
_SCHEMA = {"description": "A JSON Schema object, or a JSON string of one", "example": _EXAMPLE_SCHEMA}
_NAMED_SCHEMA = {"type": "object", "required": ["schema"],
                 "properties": {"name": nullable({"type": "string"}), "schema": _SCHEMA}}


def _tagged(types: list[str], required: tuple[str, ...] = (), **properties: dict) -> dict:
    """One variant of a grammar object: its `type` tag and its other fields."""
    return {"type": "object", "required": ["type", *required],
            "properties": {"type": {"type": "string", "enum": types}, **properties}}


_GRAMMARS = [_tagged(["json", "json_object"], ("value",), value=_SCHEMA),
             # No minLength: /tokenize takes the same parameters unchecked, as TGI's does; the
             # generation routes refuse an empty regex with a 422 (validation).
             _tagged(["regex"], ("value",), value={"type": "string"}),
             _tagged(["json_schema"], ("value",), value=_NAMED_SCHEMA)]

_CUSTOM_KINDS = {
    "messages": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["role"], "properties": {
            "role": {"type": "string"},
            "tool_call_id": nullable({"type": "string"}),
            "tool_calls": nullable({"type": "array", "items": {
                "type": "object", "required": ["function"], "properties": {
                    "id": nullable({"type": "string"}), "type": nullable({"type": "string"}),
                    "function": {"type": "object", "required": ["name"], "properties": {
                        "name": {"type": "string"},
                        "arguments": nullable({"oneOf": [{"type": "string"}, {"type": "object"}]})}}}}}),
            "content": nullable({"oneOf": [{"type": "string"}, {"type": "array", "items": {
                "type": "object", "required": ["type"],
                "properties": {"type": {"type": "string", "enum": ["text"]},
                               "text": nullable({"type": "string"})}}}]})}}},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "prompt": {"oneOf": [{"type": "string", "minLength": 1},
                         {"type": "array", "items": {"type": "string", "minLength": 1}},
                         {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                         {"type": "array", "items": {"type": "array", "minItems": 1,
                                                     "items": {"type": "integer", "minimum": 0}}}]},
    "stream_options": {"type": "object", "properties": {"include_usage": nullable({"type": "boolean"}),
                                                        "continuous_usage_stats": nullable({"type": "boolean"})}},
    "any": {},
    "tools": {"type": "array", "items": {"type": "object", "required": ["function"], "properties": {
        "type": nullable({"type": "string", "enum": ["function"]}),
        "function": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1}, "description": nullable({"type": "string"}),
            "parameters": nullable({**_SCHEMA, "type": "object"}), "strict": nullable({"type": "boolean"})}}}}},
    "tool_choice": {"oneOf": [{"type": "string", "enum": ["none", "auto", "required"]}, {
        "type": "object", "required": ["function"], "properties": {
            "type": nullable({"type": "string", "enum": ["function"]}),
            "function": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}]},
    "empty_string": {"type": "string", "maxLength": 0},
    "priority": {"type": "string", "enum": list(PRIORITIES)},
    "timeout": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": MAX_TIMEOUT_S},
    "false": {"type": "boolean", "enum": [False]},
    "logit_bias": {"type": "object", "maxProperties": MAX_LOGIT_BIAS_ENTRIES, "additionalProperties": {
        "type": "number", "minimum": LOGIT_BIAS_RANGE[0], "maximum": LOGIT_BIAS_RANGE[1]}},
    "grammar": {"anyOf": _GRAMMARS, "example": {"type": "json", "value": _EXAMPLE_SCHEMA}},
    # anyOf: a `value` (TGI's form) wins over `json_schema` when both are sent.
    "response_format": {"anyOf": [
        _tagged(["text"]), _tagged(["json_object"]),
        _tagged(["json_schema"], ("json_schema",), json_schema={
            **_NAMED_SCHEMA, "properties": {**_NAMED_SCHEMA["properties"], "strict": nullable({"type": "boolean"})}}),
        *_GRAMMARS]},
}
_CUSTOM_KINDS.update(RESPONSES_KINDS)


def build_document(config: RouterConfig, limits: Limits, routes: tuple[Route, ...], version: str) -> dict:
    """`routes`: the route table's, whose traits say which operations the key guards and in
    which dialect they answer 401."""
    schemas = {**_request_schemas(config, limits), **response_schemas()}
    schemas.update(ResponsesRequest=_responses_request(limits), **responses_response_schemas())
    document = {
        "openapi": "3.0.3",
        "info": {"title": "sluice", "version": version, "license": {"name": "Apache 2.0"},
                 "description": f"A text-generation-inference compatible server. The bounds shown are this "
                                f"server's; it takes up to {limits.max_total_tokens} tokens per request, "
                                f"{limits.max_input_tokens} of them prompt."},
        "paths": _paths(routes if config.api_key is not None else ()),
        "components": {"schemas": schemas},
    }
    if config.api_key is not None:
        document["components"]["securitySchemes"] = {"BearerAuth": {"type": "http", "scheme": "bearer"}}
    return document


def field_schema(name: str, kind: str, bound: Range | None, validated: bool = True,
                 length: Range | None = None) -> dict:
    """One request field: its kind's JSON Schema, narrowed by its range (and its strings by
    `length`); null means unset."""
    if validated and name in UNSUPPORTED:
        return {"nullable": True, "enum": [None], "description": DESCRIPTIONS[name]}
    schema = dict(_CUSTOM_KINDS[kind] if kind in _CUSTOM_KINDS else _kind_schema(kind))
    if length is not None:
        schema = _string_lengths(schema, length)
    if bound is not None:
        schema = _narrowed(schema, bound)
    return nullable({**schema, "description": DESCRIPTIONS[name]})


def _string_lengths(schema: dict, bound: Range) -> dict:
    """Every string in the field, a list's items too, at most `bound.high` characters."""
    if "oneOf" in schema:
        return {**schema, "oneOf": [_string_lengths(option, bound) for option in schema["oneOf"]]}
    if schema.get("type") == "array":
        return {**schema, "items": _string_lengths(schema["items"], bound)}
    if schema.get("type") == "string" and bound.high is not None:
        return {**schema, "maxLength": int(bound.high)}
    return schema


def _kind_schema(kind: str) -> dict:
    """What schemas.convert accepts for `kind`."""
    if kind in INT_BOUNDS:
        low, high = INT_BOUNDS[kind]
        return {"type": "integer", "minimum": low, "maximum": high}
    return {"bool": {"type": "boolean"}, "f32": {"type": "number"}, "string": {"type": "string"},
            "strings": {"type": "array", "items": {"type": "string"}}, "object": {"type": "object"}}[kind]


def _narrowed(schema: dict, bound: Range) -> dict:
    if "oneOf" in schema:  # a string or a list: the bound is on the list's length
        return {"oneOf": [_narrowed(option, bound) for option in schema["oneOf"]]}
    if schema.get("type") == "array":
        most = {} if bound.high is None else {"maxItems": int(bound.high)}
        return {**schema, "minItems": int(bound.low or 0), **most}
    if schema.get("type") not in ("integer", "number"):
        return schema
    narrowed = dict(schema)
    if bound.low is not None and bound.low >= schema.get("minimum", bound.low):
        narrowed.update(minimum=bound.low, **({"exclusiveMinimum": True} if bound.low_open else {}))
    if bound.high is not None and bound.high <= schema.get("maximum", bound.high):
        narrowed.update(maximum=bound.high, **({"exclusiveMaximum": True} if bound.high_open else {}))
    return narrowed


def _object(fields: dict[str, str], ranges: dict[str, Range], required: tuple[str, ...] = (),
            validated: bool = True) -> dict:
    properties = {name: field_schema(name, kind, ranges.get(name), validated, ranges.get(f"{name}_length"))
                  for name, kind in fields.items()}
    for name in required:  # present and not null
        properties[name] = {key: value for key, value in properties[name].items() if key != "nullable"}
    return {"type": "object", "properties": properties, **({"required": list(required)} if required else {})}


def _request_schemas(config: RouterConfig, limits: Limits) -> dict[str, dict]:
    tgi_ranges = {**RANGES, **limit_ranges(limits)}
    openai_ranges = {**openai_schemas.RANGES, "n": Range(1, config.max_client_batch_size),
                     "top_logprobs": tgi_ranges["top_n_tokens"], "stop": tgi_ranges["stop"], "stop_length": tgi_ranges["stop_length"]}
    completion_ranges = {**openai_ranges, "logprobs": tgi_ranges["top_n_tokens"], "max_tokens": Range(0, None),
                         "prompt": Range(1, config.max_client_batch_size)}
    inputs = {"type": "string", "description": "The prompt"}
    parameters = nullable({**_object(PARAMETER_KINDS, tgi_ranges), "description": "Generation parameters"})
    generate = {"type": "object", "required": ["inputs"], "example": EXAMPLES["generate"],
                "properties": {"inputs": {**inputs, "minLength": 1}, "parameters": parameters}}
    stream = nullable({"type": "boolean", "description": "Answer with server-sent events"})
    # /tokenize checks JSON types only, as TGI's does: no ranges, nothing refused.
    unchecked = nullable({**_object(PARAMETER_KINDS, {}, validated=False), "description": "Not used"})
    return {
        "GenerateRequest": generate,
        "CompatGenerateRequest": {**generate, "properties": {**generate["properties"], "stream": stream}},
        "TokenizeRequest": {"type": "object", "required": ["inputs"], "example": {"inputs": "Hello world"},
                            "properties": {"inputs": inputs, "parameters": unchecked}},
        "ChatRequest": {**_object(openai_schemas.CHAT_FIELDS, openai_ranges, required=("messages",)),
                        "example": EXAMPLES["chat"]},
        # Like /tokenize: the fields' JSON types are checked, not their ranges.
        "ChatTokenizeRequest": _object(openai_schemas.CHAT_FIELDS, {}, required=("messages",), validated=False),
        "CompletionRequest": {**_object(openai_schemas.COMPLETION_FIELDS, completion_ranges, required=("prompt",)),
                              "example": EXAMPLES["completion"]},
    }


def _responses_request(limits: Limits) -> dict:
    stop_ranges = {name: limit_ranges(limits)[name] for name in ("stop", "stop_length")}
    schema = _object(responses_schemas.RESPONSES_FIELDS, {**responses_schemas.RANGES, **stop_ranges})
    for name, description in RESPONSES_DESCRIPTIONS.items():
        schema["properties"][name]["description"] = description
    return {**schema, "example": RESPONSES_EXAMPLE}


def _paths(guarded_routes: tuple[Route, ...]) -> dict:
    tgi_errors, openai_errors = _errors("ErrorResponse"), _errors("OpenAIErrorResponse")
    paths = {
        **_generation_paths(tgi_errors),
        **_openai_paths(openai_errors),
        **responses_paths(_op, openai_errors),
        **resume_paths(_op, tgi_errors),
        **_plain_routes(tgi_errors),
    }
    _secure(paths, guarded_routes, tgi_errors[401], openai_errors[401])
    return paths


def _generation_paths(tgi_errors: dict) -> dict:
    return {
        "/": {"get": _op("Health check, as /health; a browser (Accept: text/html) gets a page linking to the "
                         "playground", "Health", ok={}, errors=tgi_errors, codes=(503,)),
              "post": _op("Generate: SSE when `stream` is true, else a one-element list", "Text Generation",
                          body="CompatGenerateRequest", errors=tgi_errors,
                          ok={"application/json": {"type": "array", "items": ref("GenerateResponse")},
                              "text/event-stream": sse_event("StreamResponse", "ErrorResponse")})},
        "/generate": {"post": _op("Generate tokens", "Text Generation", body="GenerateRequest", errors=tgi_errors,
                                  ok={"application/json": ref("GenerateResponse")})},
        "/generate_stream": {"post": _op("Generate a stream of tokens (server-sent events)", "Text Generation",
                                         body="GenerateRequest", errors=tgi_errors,
                                         ok={"text/event-stream": sse_event("StreamResponse", "ErrorResponse")})},
        "/tokenize": {"post": _op("Tokenize the inputs", "Text Generation", body="TokenizeRequest",
                                  errors=tgi_errors, codes=(400, 413, 415, 422, 503),
                                  ok={"application/json": {"type": "array", "items": ref("SimpleToken")}})},
        "/chat_tokenize": {"post": _op("TGI's: the prompt a chat body renders to (tools included), and its tokens",
                                       "Text Generation", body="ChatTokenizeRequest", errors=tgi_errors,
                                       codes=(400, 413, 415, 422, 429, 503),
                                       ok={"application/json": ref("ChatTokenizeResponse")})},
    }


def _openai_paths(openai_errors: dict) -> dict:
    return {
        "/v1/chat/completions": {"post": _op("OpenAI chat completions", "OpenAI", body="ChatRequest",
                                             errors=openai_errors, ok={
                                                 "application/json": ref("ChatCompletion"),
                                                 "text/event-stream": sse_event("ChatCompletionChunk",
                                                                                "OpenAIErrorResponse")})},
        "/v1/completions": {"post": _op("OpenAI completions", "OpenAI", body="CompletionRequest",
                                        errors=openai_errors, ok={
                                            "application/json": ref("Completion"),
                                            "text/event-stream": sse_event("CompletionChunk", "OpenAIErrorResponse")})},
        "/v1/models": {"get": _op("The served model", "OpenAI", ok={"application/json": ref("ModelList")},
                                  errors=openai_errors, codes=(503,))},
        "/v1/models/{model_id}": {"get": {**_op("The served model by its id (which may hold a `/`), else 404",
                                                "OpenAI", ok={"application/json": ref("Model")},
                                                errors=openai_errors, codes=(404, 503)),
                                          "parameters": [{"name": "model_id", "in": "path", "required": True,
                                                          "schema": {"type": "string", "minLength": 1,
                                                                     "pattern": "^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?$"}}]}},
    }


def _secure(paths: dict, guarded_routes: tuple[Route, ...], tgi_401: dict, openai_401: dict) -> None:
    """The routes the API key guards say so, and that they may 401 in their dialect's shape."""
    for route in guarded_routes:
        if route.needs_key:
            operation = paths[route.path][route.method.lower()]
            operation["security"] = [{"BearerAuth": []}]
            operation["responses"]["401"] = openai_401 if route.openai else tgi_401


def _plain_routes(errors: dict) -> dict:
    health = _op("Health check: 200 with an empty body while a shard is in rotation", "Health", ok={},
                 errors=errors, codes=(503,))
    html = {"text/html": {"type": "string"}}
    return {
        "/health": {"get": health}, "/ping": {"get": health},
        "/info": {"get": _op("Model and server information", "Text Generation",
                             ok={"application/json": ref("Info")})},
        "/metrics": {"get": _op("Prometheus metrics", "Text Generation", ok={"text/plain": {"type": "string"}})},
        "/playground": {"get": _op("The streaming playground page", "Docs", ok=html, errors=errors, codes=(503,))},
        "/docs": {"get": _op("This document, rendered by Swagger UI", "Docs", ok=html)},
        "/api-doc/openapi.json": {"get": _op("This document", "Docs", ok={"application/json": {"type": "object"}})},
    }
