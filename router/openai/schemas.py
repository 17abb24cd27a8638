"""OpenAI request bodies -> frozen dataclasses, and their translation into the native
GenerateParameters that validation and the shards already understand. Unknown keys are
ignored (the JS client sends `details`; `model` may be anything, even a URL). JSON types
are checked here; ranges and limits in check_before_admission and validation.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from router.config import Limits
from router.errors import ToolError, ValidationError
from router.openai.tool_prompt import check_tool_fields
from router.openai.tools import Tools, parse_tools
from router.schemas import (GenerateParameters, Grammar, convert, describe, grammar_type, parse_grammar,
                            parse_logit_bias, schema_value, shape_error)
from router.validation import RANGES as TGI_RANGES
from router.validation import Range, limit_ranges


@dataclass(frozen=True, slots=True)
class OpenAIParameters:
    """What chat and completion requests share."""

    max_tokens: int | None = None  # None: up to the rest of the context
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    num_top_logprobs: int | None = None  # None: no logprobs; 0: the chosen tokens' only
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False  # vLLM's continuous_usage_stats: usage on every chunk
    grammar: Grammar | None = None  # from response_format
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_tokens: int | None = None  # vLLM's extensions, as native min_new_tokens and ignore_eos_token
    ignore_eos: bool = False
    echo: bool = False  # completions: the prompt (and with logprobs its tokens') before the answer


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: tuple[dict[str, Any], ...]  # as the client sent them, with `content` a string
    parameters: OpenAIParameters  # with the tools' grammar, when the answer may call one
    tools: Tools | None = None  # None: the answer is text (no tools, or tool_choice "none")


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    prompts: tuple[str | tuple[int, ...], ...]  # text, or token ids
    parameters: OpenAIParameters


_KINDS = {"max_tokens": "u32", "temperature": "f32", "top_p": "f32", "seed": "u64", "n": "u32",
          "frequency_penalty": "f32", "presence_penalty": "f32", "stream": "bool", "min_tokens": "u32",
          "ignore_eos": "bool"}

# Every body field each route reads, with its kind: schemas.convert's kinds, or the name of
# a shape parsed by hand below. The OpenAPI document (router/openapi.py) is rendered from these.
_SHARED_FIELDS = {"model": "any", **_KINDS, "max_completion_tokens": "u32", "stop": "stop", "logit_bias": "logit_bias",
                  "stream_options": "stream_options", "response_format": "response_format"}
CHAT_FIELDS = {**_SHARED_FIELDS, "messages": "messages", "logprobs": "bool", "top_logprobs": "u32",
               "tools": "tools", "tool_choice": "tool_choice", "parallel_tool_calls": "bool",
               "tool_prompt": "string"}
COMPLETION_FIELDS = {**_SHARED_FIELDS, "prompt": "prompt", "logprobs": "u32", "suffix": "empty_string",
                     "echo": "bool"}

# Ranges as the checks below and TGI's validation (after to_generate_parameters) apply
# them: temperature 0 means greedy, and top_p 1 means "off". One gap a range cannot show:
# a temperature above 0 but below validation.FLOAT32_MIN is refused there.
RANGES = {"n": Range(1, None), "max_tokens": Range(low=0, low_open=True),
          "temperature": Range(0.0, 2.0),
          "top_p": Range(TGI_RANGES["top_p"].low, 1.0), "frequency_penalty": TGI_RANGES["frequency_penalty"],
          "presence_penalty": TGI_RANGES["presence_penalty"]}


def parse_chat(body: Any) -> ChatRequest:
    body = _object(body)
    if body.get("messages") is None:
        raise shape_error("missing field `messages`")
    messages = tuple(_message(f"messages[{index}]", message)
                     for index, message in enumerate(_list("messages", body["messages"])))
    if not messages:
        raise ValidationError("`messages` cannot be empty")
    logprobs = convert("logprobs", body.get("logprobs"), "bool")
    top_logprobs = convert("top_logprobs", body.get("top_logprobs"), "u32")
    if top_logprobs and not logprobs:
        raise ValidationError("`top_logprobs` needs `logprobs` set to true")
    parameters = _parameters(body, (top_logprobs or 0) if logprobs else None)
    tool_prompt = convert("tool_prompt", body.get("tool_prompt"), "string")
    tools = parse_tools(body)
    if tools is None:  # no tools shown: tool_prompt has nothing to introduce, as in TGI
        return ChatRequest(messages, parameters)
    if parameters.grammar is not None:
        # TGI's words; tool_choice `none` drops the tools, and response_format then holds.
        raise ToolError("Grammar and tools are mutually exclusive")
    tools = dataclasses.replace(tools, prompt=tool_prompt)
    return ChatRequest(messages, dataclasses.replace(parameters, grammar=tools.grammar()), tools)


def parse_completion(body: Any) -> CompletionRequest:
    body = _object(body)
    if body.get("prompt") is None:
        raise shape_error("missing field `prompt`")
    if convert("suffix", body.get("suffix"), "string"):
        raise ValidationError("Suffix is not supported and can be achieved by preprocessing the prompt.")
    echo = bool(convert("echo", body.get("echo"), "bool"))
    logprobs = convert("logprobs", body.get("logprobs"), "u32")
    parameters = dataclasses.replace(_parameters(body, logprobs), echo=echo)
    if echo and parameters.stream:
        raise ValidationError("`echo` is not supported with `stream`")
    if parameters.max_tokens == 0 and not echo:
        raise ValidationError("`max_tokens` must be strictly positive (0 only with `echo`, to score the prompt)")
    return CompletionRequest(_prompts(body["prompt"]), parameters)


def parse_stop(body: dict[str, Any]) -> tuple[str, ...]:
    """`stop`: one string or a list of them (their limits are validation's)."""
    stop = body.get("stop")
    return convert("stop", [stop] if isinstance(stop, str) else stop, "strings") or ()


def _parameters(body: dict[str, Any], num_top_logprobs: int | None) -> OpenAIParameters:
    values = {name: convert(name, body.get(name), kind) for name, kind in _KINDS.items()}
    max_completion_tokens = convert("max_completion_tokens", body.get("max_completion_tokens"), "u32")
    if values["max_tokens"] is None:  # the newer name, which OpenAI's o-series requires
        values["max_tokens"] = max_completion_tokens
    values["stop"] = parse_stop(body)
    values["stream"] = bool(values["stream"])
    values["ignore_eos"] = bool(values["ignore_eos"])
    values["logit_bias"] = parse_logit_bias("logit_bias", body.get("logit_bias"))
    options = convert("stream_options", body.get("stream_options"), "object") or {}
    values["include_usage"] = bool(convert("stream_options.include_usage", options.get("include_usage"), "bool"))
    values["continuous_usage"] = bool(convert("stream_options.continuous_usage_stats",
                                              options.get("continuous_usage_stats"), "bool"))
    values["grammar"] = _response_format(body.get("response_format"))
    return OpenAIParameters(num_top_logprobs=num_top_logprobs, **values)


# OpenAI's types, then the rest of TGI's GrammarType ones (TGI's chat takes a GrammarType here).
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema", "json", "regex")
_ANY_OBJECT = '{"type":"object"}'


def _response_format(raw: object) -> Grammar | None:
    """OpenAI's `{"type": "text" | "json_object" | "json_schema", "json_schema": {...}}`, or
    TGI's GrammarType with its `value`, which huggingface_hub sends for a json_schema
    (`{"type": "json_object", "value": schema}`)."""
    if raw is None:
        return None
    body = _object(raw, "response_format")
    kind = grammar_type("response_format", body, RESPONSE_FORMAT_TYPES)
    if kind == "text":
        return None
    if body.get("value") is not None or kind not in ("json_object", "json_schema"):
        return parse_grammar("response_format", body, field="response_format")
    if kind == "json_object":  # any JSON object
        return Grammar("json_schema", _ANY_OBJECT, "response_format")
    if body.get("json_schema") is None:
        raise shape_error("response_format: missing field `json_schema`")
    config = _object(body["json_schema"], "response_format.json_schema")
    convert("response_format.json_schema.name", config.get("name"), "string")
    # `strict`: the output always follows the schema, since every token is masked by it.
    convert("response_format.json_schema.strict", config.get("strict"), "bool")
    if config.get("schema") is None:
        raise shape_error("response_format.json_schema: missing field `schema`")
    return Grammar("json_schema", schema_value("response_format.json_schema.schema", config["schema"]),
                   "response_format")


def check_before_admission(params: OpenAIParameters, limits: Limits, *, max_num_choices: int, num_prompts: int = 1,
                           logprobs_name: str = "top_logprobs") -> None:
    """Checks that need no tokenizer, named as the client named the fields. A call's
    choices (prompts x n) are at most `max_num_choices` (--max-client-batch-size)."""
    if params.n is not None and params.n not in RANGES["n"]:
        raise ValidationError(f"`n` must be at least 1. Given: {params.n}")
    if params.temperature is not None and params.temperature not in RANGES["temperature"]:
        raise ValidationError(f"`temperature` must be >= 0 and <= 2. Given: {params.temperature}")
    if num_prompts * (params.n or 1) > max_num_choices:
        what = "Number of prompts" if (params.n or 1) == 1 else "Number of prompts x `n`"
        raise ValidationError(f"{what} exceeds the maximum allowed batch size of {max_num_choices}. "
                              f"Given: {num_prompts * (params.n or 1)}")
    if params.max_tokens is not None and params.max_tokens not in RANGES["max_tokens"] and not params.echo:
        raise ValidationError("`max_tokens` must be strictly positive")
    if params.max_tokens is not None and (params.min_tokens or 0) > params.max_tokens:
        raise ValidationError(f"`min_tokens` must be <= `max_tokens`. Given: {params.min_tokens} and {params.max_tokens}")
    if (params.num_top_logprobs or 0) not in limit_ranges(limits)["top_n_tokens"]:
        raise ValidationError(f"`{logprobs_name}` must be >= 0 and <= {limits.max_top_n_tokens}. "
                              f"Given: {params.num_top_logprobs}")


def to_generate_parameters(params: OpenAIParameters) -> GenerateParameters:
    """OpenAI's sampling defaults, in TGI's terms: temperature 0 is greedy, anything else
    (absent too) samples; top_p 1 is OpenAI's "off", which TGI's validation refuses."""
    greedy = params.temperature == 0.0
    return GenerateParameters(
        do_sample=not greedy, temperature=None if greedy else params.temperature,
        top_p=None if greedy or params.top_p == 1.0 else params.top_p,
        frequency_penalty=params.frequency_penalty, presence_penalty=params.presence_penalty,
        # max_tokens 0 (echo: score the prompt) still generates one token, left out of the answer.
        max_new_tokens=1 if params.max_tokens == 0 else params.max_tokens, stop=params.stop, grammar=params.grammar,
        decoder_input_details=params.echo and params.num_top_logprobs is not None,
        seed=params.seed, top_n_tokens=params.num_top_logprobs or None, details=True,
        min_new_tokens=params.min_tokens, ignore_eos_token=params.ignore_eos, logit_bias=params.logit_bias)


def _message(path: str, message: Any) -> dict[str, Any]:
    message = _object(message, path)
    if message.get("role") is None:
        raise shape_error(f"{path}: missing field `role`")
    convert(f"{path}.role", message["role"], "string")
    return check_tool_fields(path, {**message, "content": _content(f"{path}.content", message.get("content"))})


def _content(path: str, content: Any) -> str:
    """A string, or text parts joined (as TGI does for text-only models); null is "" (an
    assistant turn that only called tools)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for index, part in enumerate(_list(path, content)):
        part = _object(part, f"{path}[{index}]")
        if part.get("type") != "text":
            raise ValidationError(f"{path}[{index}]: content of type `{part.get('type')}` is not supported: "
                                  f"this model reads text only")
        texts.append(convert(f"{path}[{index}].text", part.get("text"), "string") or "")
    return "".join(texts)


def _prompts(prompt: Any) -> tuple[str | tuple[int, ...], ...]:
    """A string, a list of strings, a list of token ids, or a list of such lists."""
    if isinstance(prompt, str):
        return (prompt,)
    prompts = _list("prompt", prompt)
    if not prompts:
        raise shape_error("Empty array detected. Do not use an empty array for the prompt.")
    if all(isinstance(item, str) for item in prompts):
        return tuple(prompts)
    if all(_is_token_id(item) for item in prompts):
        return (tuple(prompts),)
    if all(isinstance(item, list) and item and all(map(_is_token_id, item)) for item in prompts):
        return tuple(tuple(item) for item in prompts)
    raise ValidationError("`prompt` must be a string, a list of strings, a list of token ids (integers >= 0) "
                          "or a list of non-empty such lists")


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def _object(value: Any, path: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        where = f"{path}: " if path else ""
        raise shape_error(f"{where}invalid type: {describe(value)}, expected a JSON object")
    return value


def _list(path: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise shape_error(f"{path}: invalid type: {describe(value)}, expected a sequence")
    return value
