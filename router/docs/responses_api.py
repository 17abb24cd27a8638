"""The Responses API's part of the OpenAPI document: the JSON Schema of the request kinds
router/openai/responses/schemas.py parses by hand (RESPONSES_FIELDS names them), the
descriptions of the fields whose meaning differs from chat's, the Response object, its
stream events, the deletion answer and the list of input items, and the four operations. openapi.py renders the
request from the field table, as for every other route; the fuzz test validates real
answers against these."""

from __future__ import annotations

from collections.abc import Callable

from router.docs.bodies import nullable, ref, sse_event
from router.openai.responses.input_items import DEFAULT_LIMIT, LIMITS, ORDERS
from router.openai.responses.items import ROLES, TEXT_PARTS

_STR, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_EXAMPLE_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
EXAMPLE = {"model": "tgi", "input": "What is deep learning?", "max_output_tokens": 20}


def _object(required: tuple[str, ...] = (), **properties: dict) -> dict:
    return {"type": "object", "properties": properties, **({"required": list(required)} if required else {})}


def _text(part_types: tuple[str, ...]) -> dict:
    """A string, or a list of text parts."""
    part = _object(("type", "text"), type={"type": "string", "enum": list(part_types)}, text=_STR)
    return {"oneOf": [_STR, {"type": "array", "items": part}]}


# `id`: kept (a Response's output items sent back keep theirs), else given when stored.
_ITEMS = {"anyOf": [
    _object(("role", "content"), type={"type": "string", "enum": ["message"]},
            role={"type": "string", "enum": list(ROLES)}, content=_text(TEXT_PARTS), id=nullable(_STR)),
    _object(("type", "call_id", "name", "arguments"), type={"type": "string", "enum": ["function_call"]},
            call_id=_STR, name=_STR, arguments=_STR, id=nullable(_STR)),
    _object(("type", "call_id", "output"), type={"type": "string", "enum": ["function_call_output"]},
            call_id=_STR, output=_text(("input_text",)), id=nullable(_STR))]}

_FORMATS = [
    _object(("type",), type={"type": "string", "enum": ["text"]}),
    _object(("type",), type={"type": "string", "enum": ["json_object"]}),
    _object(("type", "name", "schema"), type={"type": "string", "enum": ["json_schema"]}, name=_STR,
            schema={"type": "object", "example": _EXAMPLE_SCHEMA}, strict=nullable(_BOOL),
            description=nullable(_STR))]

# The kinds of RESPONSES_FIELDS that are no schemas.convert kind (openapi.py's _CUSTOM_KINDS).
RESPONSES_KINDS = {
    "response_input": {"oneOf": [_STR, {"type": "array", "items": _ITEMS}]},
    "response_tools": {"type": "array", "items": _object(
        ("type", "name"), type={"type": "string", "enum": ["function"]}, name={"type": "string", "minLength": 1},
        description=nullable(_STR), parameters=nullable({"type": "object", "example": _EXAMPLE_SCHEMA}),
        strict=nullable(_BOOL))},
    "response_tool_choice": {"oneOf": [{"type": "string", "enum": ["none", "auto", "required"]}, _object(
        ("type", "name"), type={"type": "string", "enum": ["function"]}, name=_STR)]},
    "response_text": _object(format=nullable({"anyOf": _FORMATS}),
                             verbosity=nullable({"type": "string", "enum": ["medium"]})),
    "metadata": {"type": "object", "maxProperties": 16, "additionalProperties": {"type": "string", "maxLength": 512}},
    "response_stream_options": _object(include_obfuscation=nullable(_BOOL)),
    "empty_list": {"type": "array", "maxItems": 0, "items": _STR},
    "no_truncation": {"type": "string", "enum": ["disabled"]},
    "zero": {"type": "integer", "enum": [0]},
    "null": {"enum": [None]},
}

# Fields whose name chat or completions also use, with another meaning here.
RESPONSES_DESCRIPTIONS = {
    "tools": "Functions the model may call, in the Responses shape: `{\"type\": \"function\", \"name\", "
             "\"description\", \"parameters\", \"strict\"}` (the arguments always follow `parameters`). Built-in "
             "tools (web_search, file_search, computer_use...) are refused with 422",
    "tool_choice": "`auto` (the default: a call or a text answer), `required`, `none`, or "
                   "`{\"type\": \"function\", \"name\": ...}`",
    "top_logprobs": "Not supported: 0 or null only",
    "stream_options": "`include_obfuscation` is accepted; nothing is obfuscated",
    "prompt": "Not supported (stored prompt templates): null only",
    "stop": "An extension (chat's `stop`; OpenAI's Responses API has none): a string or a list of them. The "
            "answer ends before the first, which is not part of the output",
}


def _item() -> dict:
    part = _object(("type", "text"), type=_STR, text=_STR, annotations={"type": "array", "items": {}},
                   logprobs={"type": "array", "items": {}})
    return _object(("id", "type", "status"), id=_STR, type={"type": "string", "enum": ["message", "function_call"]},
                   status={"type": "string", "enum": ["in_progress", "completed", "incomplete"]}, role=_STR,
                   content={"type": "array", "items": part}, call_id=_STR, name=_STR, arguments=_STR)


def _response() -> dict:
    usage = nullable(_object(
        ("input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens"),
        input_tokens=_INT, output_tokens=_INT, total_tokens=_INT,
        input_tokens_details=_object(("cached_tokens",), cached_tokens=_INT, cache_write_tokens=_INT),
        output_tokens_details=_object(("reasoning_tokens",), reasoning_tokens=_INT)))
    tool = _object(("type", "name"), type=_STR, name=_STR, description=nullable(_STR),
                   parameters=nullable({"type": "object"}), strict=nullable(_BOOL))
    return {**_object(
        ("id", "object", "created_at", "status", "model", "output", "tools", "tool_choice", "parallel_tool_calls",
         "text", "metadata", "usage"),
        id=_STR, object={"type": "string", "enum": ["response"]}, created_at=_INT, completed_at=nullable(_INT),
        status={"type": "string", "enum": ["in_progress", "completed", "incomplete", "failed"]}, model=_STR,
        output={"type": "array", "items": ref("ResponseOutputItem")}, usage=usage,
        error=nullable(_object(("code", "message"), code=_STR, message=_STR)),
        incomplete_details=nullable(_object(("reason",), reason=_STR)), instructions=nullable(_STR),
        max_output_tokens=nullable(_INT), temperature={"type": "number"}, top_p={"type": "number"},
        tools={"type": "array", "items": tool}, tool_choice={"oneOf": [_STR, {"type": "object"}]},
        parallel_tool_calls=_BOOL, text={"type": "object"}, metadata={"type": "object"},
        previous_response_id=nullable(_STR), store=_BOOL, user=nullable(_STR)),
        "description": "`status` completed, or incomplete (`incomplete_details.reason` max_output_tokens)"}


def _listed_item() -> dict:
    """An item of GET .../input_items (input_items.listed): a message (one text part), a call
    or a call's output."""
    part = _object(("type", "text"), type={"type": "string", "enum": ["input_text", "output_text"]}, text=_STR,
                   annotations={"type": "array", "items": {}}, logprobs={"type": "array", "items": {}})
    common = {"id": _STR, "status": {"type": "string", "enum": ["completed"]}}
    return {"oneOf": [
        _object(("id", "type", "status", "role", "content"), type={"type": "string", "enum": ["message"]},
                role={"type": "string", "enum": list(ROLES)}, content={"type": "array", "items": part}, **common),
        _object(("id", "type", "status", "call_id", "name", "arguments"),
                type={"type": "string", "enum": ["function_call"]}, call_id=_STR, name=_STR, arguments=_STR,
                **common),
        _object(("id", "type", "status", "call_id", "output"),
                type={"type": "string", "enum": ["function_call_output"]}, call_id=_STR, output=_STR, **common)]}


EVENT_TYPES = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
               "response.output_text.delta", "response.output_text.done", "response.content_part.done",
               "response.function_call_arguments.delta", "response.function_call_arguments.done",
               "response.output_item.done", "response.completed", "response.incomplete", "response.failed"]


def responses_response_schemas() -> dict[str, dict]:
    event = _object(("type", "sequence_number"), type={"type": "string", "enum": EVENT_TYPES},
                    sequence_number=_INT, response=ref("Response"), item=ref("ResponseOutputItem"),
                    output_index=_INT, item_id=_STR, content_index=_INT, delta=_STR, text=_STR, arguments=_STR,
                    part={"type": "object"}, logprobs={"type": "array", "items": {}})
    return {
        "Response": _response(), "ResponseOutputItem": _item(),
        "ResponseStreamEvent": {**event, "description": "One SSE event (`event: <type>`, `data: {json}`), numbered "
                                "from 0; the last is response.completed, response.incomplete or response.failed"},
        "ResponseDeleted": _object(("id", "object", "deleted"), id=_STR, object=_STR, deleted=_BOOL),
        "ResponseInputItem": _listed_item(),
        "ResponseItemList": {**_object(
            ("object", "data", "first_id", "last_id", "has_more"), object={"type": "string", "enum": ["list"]},
            data={"type": "array", "items": ref("ResponseInputItem")}, first_id=nullable(_STR),
            last_id=nullable(_STR), has_more=_BOOL),
            "description": "`first_id` and `last_id` are null on an empty page"},
    }


def _page_parameters() -> list[dict]:
    low, high = LIMITS
    return [
        {"name": "order", "in": "query", "required": False, "description": "`desc` (the default): newest first",
         "schema": {"type": "string", "enum": list(ORDERS), "default": "desc"}},
        {"name": "limit", "in": "query", "required": False, "description": "Items per page",
         "schema": {"type": "integer", "minimum": low, "maximum": high, "default": DEFAULT_LIMIT}},
        {"name": "after", "in": "query", "required": False, "schema": _STR,
         "description": "An item id of this response's input: the page starts after it, in `order`"}]


def responses_paths(operation: Callable[..., dict], errors: dict) -> dict:
    """The four operations, `operation` being docs/operations.py's."""
    path_id = [{"name": "response_id", "in": "path", "required": True, "schema": _STR,
                "description": "A `resp_…` id this router made"}]
    retrieve = operation("A stored response (this router process's store only)", "OpenAI", errors=errors,
                         codes=(404, 422), ok={"application/json": ref("Response")})
    delete = operation("Delete a stored response", "OpenAI", errors=errors, codes=(404,),
                       ok={"application/json": ref("ResponseDeleted")})
    input_items = operation("The input items of a stored response, earlier turns (previous_response_id) included",
                            "OpenAI", errors=errors, codes=(404, 422), ok={"application/json": ref("ResponseItemList")})
    return {
        "/v1/responses": {"post": operation(
            "OpenAI responses: SSE (typed events) when `stream` is true", "OpenAI", body="ResponsesRequest",
            errors=errors, codes=(400, 404, 413, 415, 422, 424, 429, 500, 503),
            ok={"application/json": ref("Response"), "text/event-stream": sse_event("ResponseStreamEvent")})},
        "/v1/responses/{response_id}": {"get": {**retrieve, "parameters": path_id},
                                        "delete": {**delete, "parameters": path_id}},
        "/v1/responses/{response_id}/input_items": {"get": {**input_items, "parameters": path_id + _page_parameters()}},
    }
