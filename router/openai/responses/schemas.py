"""POST /v1/responses bodies -> a frozen ResponsesRequest: the conversation items, chat's
OpenAIParameters (so validation and the shards see what chat sends), chat's Tools (the
flat Responses tool shape converted, then parse_tools), and the request fields a Response
echoes. JSON types are checked here; unknown keys are ignored as on chat, but the fields of
OpenAI's API this server does not implement are refused with a 422 naming them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from router.errors import InvalidParameter, ValidationError
from router.openai import schemas as chat_schemas
from router.openai.responses.items import Item, parse_input
from router.openai.schemas import OpenAIParameters, parse_stop
from router.openai.tools import Tools, parse_tools
from router.schemas import Grammar, convert, describe, grammar_type, shape_error
from router.validation import Range

# Every body field the parser reads, with its kind (schemas.convert's, or a shape parsed by
# hand below); the OpenAPI document is rendered from this table (router/docs/openapi.py).
RESPONSES_FIELDS = {
    "model": "any", "input": "response_input", "instructions": "string", "max_output_tokens": "u32",
    "temperature": "f32", "top_p": "f32", "tools": "response_tools", "tool_choice": "response_tool_choice",
    "parallel_tool_calls": "bool", "text": "response_text", "metadata": "metadata", "user": "string",
    "safety_identifier": "string", "prompt_cache_key": "string", "store": "bool", "previous_response_id": "string",
    "stream": "bool", "stream_options": "response_stream_options", "background": "false", "include": "empty_list",
    "truncation": "no_truncation", "top_logprobs": "zero", "reasoning": "null", "conversation": "null",
    "prompt": "null", "max_tool_calls": "null",
    "stop": "stop",  # an extension, chat's: OpenAI's Responses API has none
}

RANGES = {"max_output_tokens": Range(low=0, low_open=True), "temperature": Range(0.0, 2.0),
          "top_p": chat_schemas.RANGES["top_p"]}

# Fields of OpenAI's API this server does not implement: the values that mean "not used"
# (null always does), and why anything else is refused.
_UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "background": ((False,), "a response runs while its request is open"),
    "include": (([],), "no extra output (logprobs, sources, reasoning) is returned"),
    "truncation": (("disabled",), "a prompt over the context is refused, never truncated"),
    "top_logprobs": ((0,), "logprobs are not returned on this route"),
    "reasoning": ((), "the model has no reasoning settings"),
    "conversation": ((), "conversations are not stored: use `previous_response_id`"),
    "prompt": ((), "there are no stored prompt templates"),
    "max_tool_calls": ((), "use `parallel_tool_calls: false` for at most one call"),
}
METADATA_LIMITS = (16, 64, 512)  # OpenAI's: pairs, characters per key, characters per value
ANY_OBJECT = '{"type":"object"}'


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    items: tuple[Item, ...]  # this request's input items (items.parse_input's plain form)
    parameters: OpenAIParameters  # with the tools' or text.format's grammar
    tools: Tools | None  # None: the answer is text (no tools, or tool_choice "none")
    instructions: str | None
    previous_response_id: str | None
    store: bool
    echo: dict[str, Any]  # the request's fields as the Response repeats them


def parse_responses(body: Any) -> ResponsesRequest:
    body = _object(body, "")
    _refuse_unsupported(body)
    previous = convert("previous_response_id", body.get("previous_response_id"), "string")
    if body.get("input") is None and previous is None:
        raise shape_error("missing field `input`")
    items = () if body.get("input") is None else parse_input(body["input"])
    if not items and previous is None:
        raise ValidationError("`input` cannot be empty")
    instructions = convert("instructions", body.get("instructions"), "string")
    parameters = _parameters(body)
    tools, echo = _tools(body)
    text, grammar = _text(body.get("text"))
    if tools is not None and grammar is not None:
        raise InvalidParameter("text.format", "`text.format` cannot be used with `tools`: a tool call's grammar is "
                                              "its parameters schema (use tool_choice `none` for a text.format)")
    grammar = tools.grammar() if tools is not None else grammar
    store = convert("store", body.get("store"), "bool")
    echo.update(text=text, instructions=instructions, previous_response_id=previous, store=store is not False,
                max_output_tokens=parameters.max_tokens, metadata=_metadata(body.get("metadata")),
                temperature=1.0 if parameters.temperature is None else parameters.temperature,
                top_p=1.0 if parameters.top_p is None else parameters.top_p,
                **{name: convert(name, body.get(name), "string")
                   for name in ("user", "safety_identifier", "prompt_cache_key")})
    return ResponsesRequest(items, dataclasses.replace(parameters, grammar=grammar), tools, instructions, previous,
                            store is not False, echo)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, (unused, reason) in _UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and not any(type(value) is type(ok) and value == ok for ok in unused):
            raise InvalidParameter(name, f"`{name}` is not supported by this server: {reason}. "
                                         f"Given: {describe(value)}")
    raw_options = body.get("stream_options")
    options = {} if raw_options is None else _object(raw_options, "stream_options")
    convert("stream_options.include_obfuscation", options.get("include_obfuscation"), "bool")  # nothing to hide


def _parameters(body: dict[str, Any]) -> OpenAIParameters:
    max_tokens = convert("max_output_tokens", body.get("max_output_tokens"), "u32")
    temperature = convert("temperature", body.get("temperature"), "f32")
    if max_tokens is not None and max_tokens not in RANGES["max_output_tokens"]:
        raise InvalidParameter("max_output_tokens", "`max_output_tokens` must be strictly positive")
    if temperature is not None and temperature not in RANGES["temperature"]:
        raise InvalidParameter("temperature", f"`temperature` must be >= 0 and <= 2. Given: {temperature}")
    # top_p's range and stop's limits are validation's (after to_generate_parameters), as on chat.
    return OpenAIParameters(max_tokens=max_tokens, temperature=temperature,
                            top_p=convert("top_p", body.get("top_p"), "f32"),
                            stop=parse_stop(body),
                            stream=bool(convert("stream", body.get("stream"), "bool")))


def _tools(body: dict[str, Any]) -> tuple[Tools | None, dict[str, Any]]:
    """Chat's Tools, and the echoed `tools`, `tool_choice` and `parallel_tool_calls`."""
    raw = body.get("tools")
    if raw is not None and not isinstance(raw, list):
        raise shape_error(f"tools: invalid type: {describe(raw)}, expected a sequence")
    functions = [_function(f"tools[{index}]", tool) for index, tool in enumerate(raw or [])]
    choice, echoed_choice = _tool_choice(body.get("tool_choice"))
    parallel = body.get("parallel_tool_calls")
    tools = parse_tools({"tools": [{"type": "function", "function": function} for function in functions],
                         "tool_choice": choice, "parallel_tool_calls": parallel})
    # `strict`: the arguments always follow the schema, since every token is masked by it.
    echoed = [{"type": "function", "name": function["name"], "description": function.get("description"),
               "parameters": function.get("parameters"), "strict": function.get("strict", True)}
              for function in functions]
    return tools, {"tools": echoed, "tool_choice": echoed_choice, "parallel_tool_calls": parallel is not False}


def _function(path: str, raw: Any) -> dict[str, Any]:
    """A Responses function tool (`{"type": "function", "name", ...}`) as chat's `function`."""
    tool = _object(raw, path)
    kind = convert(f"{path}.type", tool.get("type"), "string")
    if kind is None:
        raise shape_error(f"{path}: missing field `type`")
    if kind != "function":
        raise InvalidParameter(f"{path}.type", f"{path}.type: built-in tools (`{kind[:50]}`) are not supported by "
                                               f"this server, only `function` tools")
    name = convert(f"{path}.name", tool.get("name"), "string")
    if not name:
        raise shape_error(f"{path}: missing field `name`" if name is None else f"{path}.name cannot be empty")
    fields = {"description": convert(f"{path}.description", tool.get("description"), "string"),
              "parameters": convert(f"{path}.parameters", tool.get("parameters"), "object"),
              "strict": convert(f"{path}.strict", tool.get("strict"), "bool")}
    return {"name": name, **{key: value for key, value in fields.items() if value is not None}}


def _tool_choice(raw: Any) -> tuple[Any, Any]:
    """(chat's tool_choice, the echoed one). OpenAI's default: auto."""
    if raw is None or isinstance(raw, str):
        return raw, "auto" if raw is None else raw
    choice = _object(raw, "tool_choice")
    kind = convert("tool_choice.type", choice.get("type"), "string")
    if kind != "function":
        raise InvalidParameter("tool_choice", f"tool_choice.type: `{str(kind)[:50]}` is not supported by this "
                                              f"server, only `function` (or `none`, `auto`, `required`)")
    name = convert("tool_choice.name", choice.get("name"), "string")
    if name is None:
        raise shape_error("tool_choice: missing field `name`")
    return {"type": "function", "function": {"name": name}}, {"type": "function", "name": name}


def _text(raw: Any) -> tuple[dict[str, Any], Grammar | None]:
    """The echoed `text`, and the grammar its `format` asks for (None: plain text)."""
    text = _object(raw if raw is not None else {}, "text")
    verbosity = convert("text.verbosity", text.get("verbosity"), "string")
    if verbosity not in (None, "medium"):
        raise InvalidParameter("text.verbosity", f"`text.verbosity` `{verbosity[:50]}` is not supported by this "
                                                 f"server, only `medium`")
    echoed = {"verbosity": "medium"}
    if text.get("format") is None:
        return {"format": {"type": "text"}, **echoed}, None
    form = _object(text["format"], "text.format")
    kind = grammar_type("text.format", form, ("text", "json_object", "json_schema"))
    if kind == "text":
        return {"format": {"type": "text"}, **echoed}, None
    if kind == "json_object":
        return {"format": {"type": "json_object"}, **echoed}, Grammar("json_schema", ANY_OBJECT, "text.format")
    name = convert("text.format.name", form.get("name"), "string")
    schema = convert("text.format.schema", form.get("schema"), "object")
    if name is None or schema is None:
        raise shape_error(f"text.format: missing field `{'name' if name is None else 'schema'}`")
    # `strict`: the output always follows the schema, since every token is masked by it.
    strict = convert("text.format.strict", form.get("strict"), "bool")
    description = convert("text.format.description", form.get("description"), "string")
    form = {"type": "json_schema", "name": name, "schema": schema, "strict": strict, "description": description}
    return {"format": form, **echoed}, Grammar("json_schema", schema, "text.format")


def _metadata(raw: Any) -> dict[str, str]:
    """Echoed as sent, within OpenAI's bounds (the store keeps it)."""
    metadata = _object(raw if raw is not None else {}, "metadata")
    max_pairs, max_key, max_value = METADATA_LIMITS
    if len(metadata) > max_pairs:
        raise InvalidParameter("metadata", f"`metadata` holds at most {max_pairs} pairs. Given: {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > max_key:
            raise InvalidParameter("metadata", f"`metadata` keys are at most {max_key} characters. "
                                               f"Given: {len(key)}")
        if len(convert(f"metadata.{key[:max_key]}", value, "string") or "") > max_value or value is None:
            raise InvalidParameter("metadata", f"`metadata` values are strings of at most {max_value} characters "
                                               f"(`{key}`)")
    return dict(metadata)


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        where = f"{path}: " if path else ""
        raise shape_error(f"{where}invalid type: {describe(value)}, expected a JSON object")
    return value
