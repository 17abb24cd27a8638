"""The Lark grammar the router sends for several tool calls in one answer
(router/openai/tools.py, made text by router/grammar.py), compiled by the shard on the
tiny model's real BPE tokenizer: one or more calls, each on a line of its own, laid out
as json.dumps lays them out; no_tool only alone. Held by it, the random-weight model
writes calls that parse and validate."""
from __future__ import annotations

import json

import jsonschema
import pytest

from router.grammar import check_grammar
from router.openai.tools import parse_tools
from shard.runtime import build_grammar_compiler
from shard.sequence import FinishReason, GrammarSpec
from shard.token_masks import allowed_tokens
from tests.shard.test_grammar import PROMPT, run

EOS = 2
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 6}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time"}}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'
OTHER_CALL = '{"name": "get_time", "arguments": {}}'
NO_TOOL = '{"name": "no_tool", "arguments": {"content": "hello"}}'


def tool_grammar(**body) -> str:
    grammar = check_grammar(parse_tools({"tools": [WEATHER, TIME], **body}).grammar(), 100_000)
    assert grammar.kind == "lark"
    return grammar.value


@pytest.fixture
def constraint_for(harness_factory):
    harness = harness_factory()
    compiler = build_grammar_compiler(harness.engine, (harness.info.model_dir / "tokenizer.json").read_text())
    yield harness, lambda **body: compiler.compile(GrammarSpec("lark", tool_grammar(**body)))
    compiler.close()


def takes(harness, constraint, text: str) -> bool:
    """Whether the grammar takes every token of `text`, and then allows EOS."""
    for token in harness.engine.tokenizer.encode(text, add_special_tokens=False).ids:
        if constraint.advance(token) is not None:
            return False
    allowed, errors = allowed_tokens([constraint], 400)
    return errors == [None] and bool(allowed[0, EOS])


@pytest.mark.parametrize("choice", ["auto", "required"])
def test_one_or_several_calls_one_per_line(constraint_for, choice):
    harness, constraint = constraint_for
    for text in (CALL, OTHER_CALL, f"{CALL}\n{OTHER_CALL}", f"{CALL}\n{CALL}\n{OTHER_CALL}"):
        assert takes(harness, constraint(tool_choice=choice), text), text


@pytest.mark.parametrize("text", [
    CALL.replace(": ", ":", 1),              # json.dumps's layout only
    f" {CALL}",
    f"{CALL}\n\n{OTHER_CALL}",               # one newline between calls
    f"{CALL}\n{NO_TOOL}",                    # no_tool only alone
    CALL.replace('"c"', '"k"'),              # the tool's own schema holds
])
def test_what_the_grammar_refuses(constraint_for, text):
    harness, constraint = constraint_for
    assert not takes(harness, constraint(tool_choice="auto"), text)


def test_no_tool_is_an_answer_under_auto_only(constraint_for):
    harness, constraint = constraint_for
    assert takes(harness, constraint(tool_choice="auto"), NO_TOOL)
    assert not takes(harness, constraint(tool_choice="required"), NO_TOOL)


@pytest.mark.parametrize("seed", range(4))
def test_the_random_model_writes_calls_that_validate(constraint_for, seed):
    harness, constraint = constraint_for
    events = run(harness, f"t{seed}", constraint(tool_choice="required"), 160, prompt=PROMPT,
                 sampling={"do_sample": True, "seed": seed, "temperature": 1.5})
    finished = events[-1].finished
    lines = finished.text.split("\n")
    if finished.finish_reason is not FinishReason.EOS_TOKEN:
        lines = lines[:-1]  # cut by the length limit
    schemas = {tool["function"]["name"]: tool["function"].get("parameters", {}) for tool in (WEATHER, TIME)}
    for line in lines:
        call = json.loads(line)
        assert list(call) == ["name", "arguments"] and line == json.dumps(call, ensure_ascii=False)
        jsonschema.validate(call["arguments"], schemas[call["name"]])
