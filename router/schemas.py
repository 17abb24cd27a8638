"""Request JSON -> frozen dataclasses, with JSON-type checks only (ranges and limits are
validation.py's job, in TGI's order). Explicit JSON null means "unset" everywhere, because
the text_generation client sends every parameter key, most of them null. No aiohttp here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from router.deadlines import seconds
from router.priorities import priority
from router.errors import RequestBodyError, ValidationError

# The integer kinds' bounds, as the Rust types TGI deserializes into have them.
INT_BOUNDS = {"i32": (-(2**31), 2**31 - 1), "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1), "usize": (0, 2**64 - 1)}


# TGI's GrammarType tags (lib.rs): "json_object" is an alias of "json", and "json_schema"
# wraps the schema as {"name", "schema"}, as OpenAI's response_format does.
GRAMMAR_TYPES = ("json", "json_object", "regex", "json_schema")


@dataclass(frozen=True, slots=True)
class Grammar:
    """What the output must match: kind "json_schema" (a JSON Schema), "regex", or "lark"
    (made by the router only, for tool calls). A schema's `value` is what the client sent
    (an object, or JSON text of one), and a Lark grammar's its rules as (name, Lark text or
    JSON Schema) pairs, until validation makes it the text the shard receives
    (grammar.check_grammar). `field` names the request field it came from, for messages."""

    kind: str
    value: str | dict[str, Any] | tuple[tuple[str, str | dict[str, Any]], ...]
    field: str = "grammar"


@dataclass(frozen=True, slots=True)
class GenerateParameters:
    best_of: int | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None     # an extension: OpenAI's meaning, as on /v1
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool = False
    max_new_tokens: int | None = None
    return_full_text: bool | None = None
    stop: tuple[str, ...] = ()
    truncate: int | None = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    seed: int | None = None
    top_n_tokens: int | None = None
    grammar: Grammar | None = None
    # Extensions (vLLM's meanings): EOS is masked until min_new_tokens; with
    # ignore_eos_token, EOS does not end the answer. logit_bias: (token id, bias), OpenAI's.
    min_new_tokens: int | None = None
    ignore_eos_token: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()
    # sluice's: seconds for the whole request, and until its first token (router/deadlines.py).
    request_timeout_s: float | None = None
    queue_timeout_s: float | None = None
    priority: str | None = None   # router/priorities.py; wins over X-Priority
    # Kept only to be refused by validation: we load no adapters.
    adapter_id: str | None = None


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    inputs: str
    parameters: GenerateParameters
    stream: bool = False
    # TGI's serde(skip) field: false for chat prompts, whose template already holds the
    # special tokens.
    add_special_tokens: bool = True
    # A prompt sent as token ids (/v1/completions): used as they are, `inputs` is ignored.
    input_ids: tuple[int, ...] | None = None


# JSON kind of each parameter; the names are the Rust types TGI deserializes into. The
# OpenAPI document (router/openapi.py) is rendered from this table.
PARAMETER_KINDS: dict[str, str] = {
    "best_of": "usize", "temperature": "f32", "repetition_penalty": "f32", "frequency_penalty": "f32",
    "presence_penalty": "f32", "top_k": "i32", "top_p": "f32", "typical_p": "f32", "do_sample": "bool", "max_new_tokens": "u32",
    "return_full_text": "bool", "stop": "strings", "truncate": "usize", "watermark": "bool",
    "details": "bool", "decoder_input_details": "bool", "seed": "u64", "top_n_tokens": "u32",
    "grammar": "grammar", "min_new_tokens": "u32", "ignore_eos_token": "bool", "logit_bias": "logit_bias",
    "adapter_id": "string", "request_timeout_s": "timeout", "queue_timeout_s": "timeout",
    "priority": "priority",
}


def parse_generate(body: Any) -> GenerateRequest:
    """Parse a TGI GenerateRequest body (also used by POST / and /tokenize)."""
    if not isinstance(body, dict):
        raise shape_error(f"invalid type: {describe(body)}, expected a JSON object")
    if "inputs" not in body:
        raise shape_error("missing field `inputs`")
    inputs = body["inputs"]
    if not isinstance(inputs, str):
        raise shape_error(f"inputs: invalid type: {describe(inputs)}, expected a string")
    raw_parameters = body.get("parameters")
    if raw_parameters is None:
        # TGI quirk: without `parameters` the defaults come from default_parameters(),
        # which samples; a present object defaults do_sample to false.
        parameters = GenerateParameters(do_sample=True)
    elif isinstance(raw_parameters, dict):
        parameters = _parse_parameters(raw_parameters)
    else:
        raise shape_error(f"parameters: invalid type: {describe(raw_parameters)}, expected a JSON object")
    stream = convert("stream", body.get("stream"), "bool")
    return GenerateRequest(inputs=inputs, parameters=parameters, stream=bool(stream))


def _parse_parameters(raw: dict[str, Any]) -> GenerateParameters:
    values: dict[str, Any] = {}
    for name, kind in PARAMETER_KINDS.items():
        if kind == "grammar":
            value = None if raw.get(name) is None else parse_grammar(f"parameters.{name}", raw[name])
        elif kind == "logit_bias":
            value = parse_logit_bias(name, raw.get(name)) or None
        elif kind == "priority":
            value = priority(f"parameters.{name}", convert(f"parameters.{name}", raw.get(name), "string"))
        elif kind == "timeout":
            value = seconds(f"parameters.{name}", convert(f"parameters.{name}", raw.get(name), "f32"))
        else:
            value = convert(f"parameters.{name}", raw.get(name), kind)
        if value is not None:
            values[name] = value
    return GenerateParameters(**values)


def parse_grammar(path: str, raw: Any, field: str = "grammar") -> Grammar:
    """TGI's GrammarType, `{"type": ..., "value": ...}`; its JSON types only (compiling it is
    grammar.check_grammar's job)."""
    raw = convert(path, raw, "object")
    kind = grammar_type(path, raw, GRAMMAR_TYPES)
    if raw.get("value") is None:
        raise shape_error(f"{path}: missing field `value`")
    value = raw["value"]
    if kind == "regex":
        return Grammar("regex", convert(f"{path}.value", value, "string"), field)
    if kind == "json_schema":
        config = convert(f"{path}.value", value, "object")
        convert(f"{path}.value.name", config.get("name"), "string")
        if config.get("schema") is None:
            raise shape_error(f"{path}.value: missing field `schema`")
        return Grammar("json_schema", schema_value(f"{path}.value.schema", config["schema"]), field)
    return Grammar("json_schema", schema_value(f"{path}.value", value), field)


def grammar_type(path: str, raw: dict[str, Any], types: tuple[str, ...]) -> str:
    """The `type` tag of a grammar (or response_format) object, one of `types`."""
    kind = raw.get("type")
    if kind is None:
        raise shape_error(f"{path}: missing field `type`")
    if convert(f"{path}.type", kind, "string") not in types:
        expected = ", ".join(f"`{name}`" for name in types)
        raise shape_error(f"{path}.type: unknown variant `{kind[:50]}`, expected one of {expected}")
    return kind


def schema_value(path: str, value: Any) -> str | dict[str, Any]:
    if isinstance(value, (dict, str)):
        return value
    raise _type_error(path, value, "a JSON Schema object, or a JSON string of one")


MAX_LOGIT_BIAS_ENTRIES = 1024
LOGIT_BIAS_RANGE = (-100.0, 100.0)  # OpenAI's: -100 bans a token, 100 all but forces it


def parse_logit_bias(path: str, raw: Any) -> tuple[tuple[int, float], ...]:
    """OpenAI's `{"<token id>": bias}`, as sorted (id, bias) pairs; ids are checked against
    the vocabulary in validation."""
    biases = convert(path, raw, "object") or {}
    if len(biases) > MAX_LOGIT_BIAS_ENTRIES:
        raise ValidationError(f"`{path}` supports up to {MAX_LOGIT_BIAS_ENTRIES} tokens. Given: {len(biases)}")
    pairs = []
    for key, value in biases.items():
        if not (key.isascii() and key.isdigit()):
            raise ValidationError(f"Invalid key in `{path}`: {key[:50]!r}. Keys must be token ids")
        bias = convert(f"{path}.{key}", value, "f32")
        if not LOGIT_BIAS_RANGE[0] <= bias <= LOGIT_BIAS_RANGE[1]:
            raise ValidationError(f"Invalid value for `{path}.{key}`: {value} is outside [-100, 100]")
        pairs.append((int(key), bias))
    return tuple(sorted(pairs))


def convert(path: str, value: Any, kind: str) -> Any:
    """Check one JSON value against its kind; None (absent or null) stays None."""
    if value is None:
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise _type_error(path, value, "a boolean")
    if kind == "f32":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _type_error(path, value, "a finite number")
    if kind in INT_BOUNDS:
        return _convert_int(path, value, kind)
    if kind == "string":
        if isinstance(value, str):
            return value
        raise _type_error(path, value, "a string")
    if kind == "strings":
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise _type_error(path, value, "a list of strings")
    if isinstance(value, dict):  # "object"
        return value
    raise _type_error(path, value, "a JSON object")


def _convert_int(path: str, value: Any, kind: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _type_error(path, value, kind)
    low, high = INT_BOUNDS[kind]
    if not low <= value <= high:
        raise shape_error(f"{path}: invalid value: integer `{value}`, expected {kind}")
    return value


def _type_error(path: str, value: Any, expected: str) -> RequestBodyError:
    return shape_error(f"{path}: invalid type: {describe(value)}, expected {expected}")


def shape_error(detail: str) -> RequestBodyError:
    # axum's wording for a body of the wrong shape, with serde-like detail.
    return RequestBodyError(422, f"Failed to deserialize the JSON body into the target type: {detail}")


def describe(value: Any) -> str:
    """Name a JSON value the way serde does in its error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{json.dumps(value)}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value[:50])}"
    return "sequence" if isinstance(value, list) else "map"
