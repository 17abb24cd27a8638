"""Checking a request's grammar before any shard sees it: its length, its JSON, and that
llguidance compiles it (which needs no tokenizer), so a bad grammar is a 422 here rather
than a failed shard call. Every step costs time in the grammar's size: callers run
check_grammar in a worker thread, never on the event loop. Verdicts are kept in an LRU by
(kind, text), as the shard keeps its compiled grammars: clients send the same schema with
request after request, and compiling it is the costly part."""

from __future__ import annotations

import dataclasses
import functools
import json

import llguidance

from protos.json_layout import JSON_LAYOUT
from router.errors import ValidationError
from router.json_body import dumps
from router.schemas import Grammar, describe


MAX_CACHED_GRAMMARS = 64  # as the shard's: each text is at most --max-grammar-length characters


def check_grammar(grammar: Grammar, max_length: int) -> Grammar:
    """The grammar as the shard receives it (a schema as compact JSON text), or a
    ValidationError naming what is wrong with it."""
    if grammar.kind == "regex":
        if not grammar.value:  # it would allow only an empty answer; the text_generation client's wording
            raise ValidationError("`value` cannot be empty for `regex` grammar")
        _check_length(grammar, grammar.value, max_length)
        text = grammar.value
    elif grammar.kind == "lark":
        text = _lark_text(grammar, max_length)
    else:
        text = _schema_text(grammar, max_length)
    # json, json_object and json_schema compile alike: one cache entry for one schema.
    error = compile_error(grammar.kind if grammar.kind in ("regex", "lark") else "json_schema", text)
    if error:
        raise _invalid(grammar, error)
    return dataclasses.replace(grammar, value=text)


@functools.lru_cache(maxsize=MAX_CACHED_GRAMMARS)
def compile_error(kind: str, text: str) -> str | None:
    """Why llguidance refuses the grammar, or None; refusals are kept too. Called only with
    texts already within the length limit."""
    if kind == "regex":
        compiled = llguidance.LLMatcher.grammar_from_regex(text)
    elif kind == "lark":
        compiled = llguidance.LLMatcher.grammar_from_lark(text)
    else:
        compiled = llguidance.LLMatcher.grammar_from_json_schema(text)
    error = llguidance.LLMatcher.validate_grammar(compiled)
    return _reason(error) if error else None


def _lark_text(grammar: Grammar, max_length: int) -> str:
    """A Lark grammar the router made: its rules as (name, body) pairs, a body a rule's
    Lark text or a JSON Schema, which becomes a %json rule laid out as the shard lays out
    JSON Schema grammars."""
    if isinstance(grammar.value, str):
        return grammar.value
    lines = []
    for name, body in grammar.value:
        if isinstance(body, dict):
            schema = dataclasses.replace(grammar, value={"x-guidance": JSON_LAYOUT, **body})
            body = "%json " + _schema_text(schema, max_length)
        lines.append(f"{name}: {body}")
    text = "\n".join(lines)
    _check_length(grammar, text, max_length)
    return text


def _schema_text(grammar: Grammar, max_length: int) -> str:
    schema = grammar.value
    if isinstance(schema, str):
        _check_length(grammar, schema, max_length)  # before parsing it
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise _invalid(grammar, f"the schema is not JSON: {exc}") from None
        except RecursionError:
            raise _invalid(grammar, "the schema is nested too deeply") from None
        if not isinstance(schema, dict):
            raise _invalid(grammar, f"a JSON Schema must be a JSON object. Given: {describe(schema)}")
    try:
        text = dumps(schema)
        text.encode("utf-8")  # JSON text may escape a lone surrogate, which gRPC cannot send
    except RecursionError:
        raise _invalid(grammar, "the schema is nested too deeply") from None
    except UnicodeEncodeError:
        raise _invalid(grammar, "the schema holds a lone surrogate (such as \\ud800), which is not UTF-8") from None
    except ValueError:  # NaN or Infinity, which Python's JSON parser lets through
        raise _invalid(grammar, "the schema holds NaN or Infinity, which are not JSON") from None
    _check_length(grammar, text, max_length)
    return text


def _check_length(grammar: Grammar, text: str, max_length: int) -> None:
    # Compiling, and then each generation step's matching, grow with the grammar.
    if len(text) > max_length:
        raise ValidationError(f"`{grammar.field}` supports grammars of up to {max_length} characters "
                              f"(a JSON Schema counts as its compact JSON text). Given: {len(text)}")


def _invalid(grammar: Grammar, reason: str) -> ValidationError:
    return ValidationError(f"{grammar.field} is not valid: {reason}")  # TGI's InvalidGrammar wording


_MAX_REASON_LENGTH = 500  # a message may quote the client's grammar, which may be long


def _reason(message: str) -> str:
    """llguidance's message, on one line. A regex parse error (the grammar's, or a schema's
    `pattern`) comes with an echo of llguidance's internal grammar around its `error:` line:
    only that line names the problem."""
    errors = [line.removeprefix("error:").strip() for line in message.splitlines() if line.startswith("error:")]
    reason = f"invalid regex: {errors[0]}" if errors else " ".join(message.split())
    return reason if len(reason) <= _MAX_REASON_LENGTH else reason[:_MAX_REASON_LENGTH] + "…"
