"""The response bodies in the OpenAPI document, as JSON Schema (OpenAPI 3.0 dialect). They
describe what tgi/answers.py and openai/answers.py write; the fuzz test
(tests/reliability/test_fuzz.py) validates real responses against them, so they cannot
drift unnoticed. Request schemas are rendered from the parsers' tables (openapi.py)."""

from __future__ import annotations


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    """Also null. OpenAPI 3.0 has no nullable $ref (`nullable` acts only beside `type`), so
    nullable objects are written out in place; and `nullable` adds no null to an enum."""
    assert "$ref" not in schema, schema
    if "enum" in schema and None not in schema["enum"]:
        schema = {**schema, "enum": [*schema["enum"], None]}
    return {**schema, "nullable": True}


def sse_event(*payloads: str) -> dict:
    """One server-sent event, as OpenAPI 3.0 tools read a text/event-stream schema. Its
    `data` is one of `payloads` as JSON; x-data-schema names them for tools (and the fuzz
    test) that look inside."""
    return {"type": "object", "required": ["data"], "x-data-schema": {"oneOf": [ref(name) for name in payloads]},
            "description": f"`data` holds JSON: {' or '.join(payloads)}",
            "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"},
                           "retry": {"type": "integer"}}}


def _object(properties: dict, required: tuple[str, ...] | None = None, **extra) -> dict:
    """An object whose listed properties are all required unless `required` says otherwise."""
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required), **extra}


_INT, _STR, _BOOL, _NUM = {"type": "integer"}, {"type": "string"}, {"type": "boolean"}, {"type": "number"}
_FINISH_REASON = {"type": "string", "enum": ["length", "eos_token", "stop_sequence"]}


def _tgi_schemas() -> dict[str, dict]:
    token = {"id": _INT, "text": _STR, "logprob": nullable(_NUM)}
    finish = {"finish_reason": _FINISH_REASON, "generated_tokens": _INT, "seed": nullable(_INT)}
    token_lists = {"prefill": {"type": "array", "items": ref("PrefillToken")},
                   "tokens": {"type": "array", "items": ref("Token")}}
    top_tokens = {"type": "array", "items": {"type": "array", "items": ref("Token")}}
    sequence = {**finish, **token_lists}
    return {
        "Token": _object({**token, "special": _BOOL}),
        "PrefillToken": _object(token),
        "BestOfSequence": _object({"generated_text": _STR, **sequence, "top_tokens": top_tokens},
                                  ("generated_text", *sequence)),
        "Details": _object({**sequence, "top_tokens": top_tokens,
                            "best_of_sequences": {"type": "array", "items": ref("BestOfSequence")}}, tuple(sequence)),
        "GenerateResponse": _object({"generated_text": _STR, "details": ref("Details")}, ("generated_text",),
                                    description="`details` only when `details` or `decoder_input_details` is set"),
        "StreamResponse": _object(
            {"index": _INT, "token": ref("Token"), "top_tokens": {"type": "array", "items": ref("Token")},
             "generated_text": nullable(_STR), "details": nullable(_object({**finish, "input_length": _INT}))},
            ("index", "token", "generated_text", "details"),
            description="One SSE event (`data: {json}`); `generated_text` is set on the last one only"),
        "SimpleToken": _object({"id": _INT, "text": _STR, "start": _INT, "stop": _INT}),
        "Info": _object({
            "model_id": _STR, "model_sha": nullable(_STR), "model_pipeline_tag": nullable(_STR),
            "max_concurrent_requests": _INT, "max_best_of": _INT, "max_stop_sequences": _INT,
            "max_input_tokens": _INT, "max_total_tokens": _INT, "validation_workers": _INT,
            "max_client_batch_size": _INT, "router": _STR,
            "version": {**_STR, "description": "the TGI release whose API this router speaks"},
            "sluice_version": {**_STR, "description": "sluice's own version"}, "sha": nullable(_STR),
            "docker_label": nullable(_STR), "model_dtype": _STR, "model_device_type": _STR,
            "max_batch_total_tokens": _INT,
            "grammar_types": {"type": "array", "items": _STR,
                              "description": "sluice's: the `type`s `parameters.grammar` takes"},
            "max_grammar_length": {**_INT, "description": "sluice's: the most characters of a grammar "
                                                          "(a JSON Schema as compact JSON text)"}}),
        "ErrorResponse": _object({"error": _STR, "error_type": _STR}, additionalProperties=False,
                                 description="Every error on TGI's routes, also those of the HTTP layer"),
    }


def _openai_schemas() -> dict[str, dict]:
    common = {"id": _STR, "object": _STR, "created": _INT, "model": _STR, "system_fingerprint": _STR}
    usage = nullable(_object({"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT}))
    choice = {"index": _INT, "logprobs": nullable({"type": "object"}), "finish_reason": nullable(_STR)}
    # A tool call's message has `content` null; a delta holds only what it adds.
    function = {"type": "object", "properties": {"name": _STR, "arguments": _STR}}
    call = {"type": "object", "properties": {"index": _INT, "id": _STR, "type": _STR, "function": function}}
    message = _object({"role": _STR, "content": nullable(_STR), "tool_calls": {"type": "array", "items": call}},
                      required=("role",))

    def answer(choice_properties: dict, description: str) -> dict:
        choices = {"type": "array", "items": _object({**choice, **choice_properties})}
        return _object({**common, "choices": choices, "usage": usage}, description=description)

    return {
        "ChatCompletion": answer({"message": message}, "`object` is chat.completion"),
        "ChatCompletionChunk": answer({"delta": message}, "One SSE event; the stream ends with `data: [DONE]`"),
        "Completion": answer({"text": _STR}, "`object` is text_completion"),
        "CompletionChunk": answer({"text": _STR}, "One SSE event; the stream ends with `data: [DONE]`"),
        "ModelList": _object({"object": _STR, "data": {"type": "array", "items": ref("Model")}}),
        "Model": _object({"id": _STR, "object": _STR, "created": _INT, "owned_by": _STR}),
        "ChatTokenizeResponse": _object({"tokenize_response": {"type": "array", "items": ref("SimpleToken")},
                                         "templated_text": _STR}),
        "OpenAIErrorResponse": _object(
            {"error": _object({"message": _STR, "type": _STR, "param": nullable(_STR), "code": _INT}),
             "error_type": _STR}, additionalProperties=False,
            description="Every error on the /v1 routes: OpenAI's object, and TGI's `error_type` beside it"),
    }


def response_schemas() -> dict[str, dict]:
    return {**_tgi_schemas(), **_openai_schemas()}
