"""Constrained decoding on the tiny random-weight Llama (fp32, CPU): its output is junk
unless a grammar holds it, so output that parses and validates means the masks worked."""
from __future__ import annotations

import json
import os
import re
import shutil
import threading

import jsonschema
import pytest
import torch
from tokenizers import Tokenizer

from protos import shard_pb2
from shard import wire
from shard.grammar import GrammarCompiler, GrammarError
from shard.runtime import build_grammar_compiler
from shard.sequence import FinishReason, GrammarSpec, Sequence, StoppingParams
from shard.token_masks import allowed_tokens

PROMPT = [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51]
LONG = {"ignore_eos_token": True}

SCHEMAS = {
    "nested objects": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "address": {"type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 6},
                                       "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                        "required": ["city", "zip"], "additionalProperties": False},
        },
        "required": ["name", "address"], "additionalProperties": False},
    "array of enums": {
        "type": "object",
        "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                                  "minItems": 1, "maxItems": 4}},
        "required": ["colors"], "additionalProperties": False},
    "required fields with bounded numbers": {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120},
                       "ok": {"type": "boolean"},
                       "tag": {"enum": ["a", "b", None]}},
        "required": ["age", "ok", "tag"], "additionalProperties": False},
    "top-level enum": {"enum": ["small", "medium", "large"]},
    "array of objects": {
        "type": "array", "minItems": 1, "maxItems": 3,
        "items": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0,
                                                          "maximum": 99}},
                  "required": ["id"], "additionalProperties": False}},
}

REGEXES = [r"(yes|no)", r"[0-9]{3}-[0-9]{4}", r"[a-z]{1,8}@[a-z]{2,5}\.(com|org)",
           r"(true|false|null)", r"#[0-9a-f]{6}", r"(ab|cd){2,4}x?"]

SAMPLINGS = pytest.mark.parametrize("sampling", [{}, {"do_sample": True, "seed": 7,
                                                      "temperature": 1.3}],
                                    ids=["greedy", "sampled"])


@pytest.fixture
def harness(harness_factory):
    return harness_factory()


@pytest.fixture
def compile_for(harness):
    compiler = build_grammar_compiler(harness.engine, (harness.info.model_dir / "tokenizer.json").read_text())
    yield lambda kind, value: compiler.compile(GrammarSpec(kind, value))
    compiler.close()


def run(harness, request_id, constraint, max_new_tokens=64, **kw):
    assert harness.submit(request_id, kw.pop("prompt", PROMPT), max_new_tokens,
                          constraint=constraint, **kw) is None
    return harness.collect(request_id)


def token_ids(events) -> list[int]:
    return [e.token.id for e in events]


# -- outputs ---------------------------------------------------------------------------
@SAMPLINGS
@pytest.mark.parametrize("name", SCHEMAS)
def test_output_parses_and_validates_against_the_json_schema(harness, compile_for, name,
                                                             sampling):
    schema = SCHEMAS[name]
    events = run(harness, "j", compile_for("json_schema", json.dumps(schema)), 96,
                 sampling=sampling)
    finished = events[-1].finished
    assert finished.finish_reason is FinishReason.EOS_TOKEN, finished.text
    jsonschema.validate(json.loads(finished.text), schema)


@SAMPLINGS
@pytest.mark.parametrize("pattern", REGEXES)
def test_output_fullmatches_the_regex(harness, compile_for, pattern, sampling):
    events = run(harness, "r", compile_for("regex", pattern), sampling=sampling)
    finished = events[-1].finished
    assert re.fullmatch(pattern, finished.text), finished.text
    assert finished.finish_reason is FinishReason.EOS_TOKEN


@SAMPLINGS
def test_bfloat16_logits_are_masked_too(harness_factory, sampling):
    harness = harness_factory("--dtype", "bfloat16")
    compiler = build_grammar_compiler(harness.engine, (harness.info.model_dir / "tokenizer.json").read_text())
    pattern = REGEXES[2]
    events = run(harness, "b", compiler.compile(GrammarSpec("regex", pattern)),
                 sampling=sampling)
    assert re.fullmatch(pattern, events[-1].finished.text), events[-1].finished.text
    compiler.close()


def test_a_complete_grammar_finishes_with_eos_token_and_length_still_comes_first(
        harness, compile_for):
    events = run(harness, "yn", compile_for("regex", "(yes|no)"), 20)
    assert events[-1].finished.text in ("yes", "no")
    assert events[-1].finished.finish_reason is FinishReason.EOS_TOKEN
    assert events[-1].finished.generated_tokens <= 3
    events = run(harness, "cut", compile_for("regex", "[0-9]{10}"), 3)
    assert events[-1].finished.finish_reason is FinishReason.LENGTH
    assert re.fullmatch("[0-9]+", events[-1].finished.text)


def test_the_same_seed_gives_the_same_constrained_output(harness, compile_for):
    sampling = {"do_sample": True, "seed": 11, "temperature": 1.5}
    outputs = [token_ids(run(harness, f"s{i}", compile_for("regex", "[a-z ]{4,40}"),
                             sampling=sampling)) for i in range(2)]
    assert outputs[0] == outputs[1]
    assert run(harness, "s2", compile_for("regex", "[a-z ]{4,40}"),
               sampling=sampling)[-1].finished.seed == 11


# -- beside other requests -------------------------------------------------------------
def unconstrained_batch(harness):
    for i in range(4):
        sampling = {"do_sample": True, "seed": i, "temperature": 0.8} if i % 2 else {}
        harness.submit(f"u{i}", PROMPT[i:], 16, sampling=sampling, stopping=LONG)


def test_a_constrained_neighbour_leaves_unconstrained_tokens_unchanged(harness_factory):
    alone = harness_factory()
    unconstrained_batch(alone)
    expected = [token_ids(alone.collect(f"u{i}")) for i in range(4)]

    busy = harness_factory()
    compiler = build_grammar_compiler(busy.engine, (busy.info.model_dir / "tokenizer.json").read_text())
    schema = SCHEMAS["nested objects"]
    busy.submit("c", PROMPT, 96, constraint=compiler.compile(
        GrammarSpec("json_schema", json.dumps(schema))))
    unconstrained_batch(busy)
    assert [token_ids(busy.collect(f"u{i}")) for i in range(4)] == expected
    jsonschema.validate(json.loads(busy.collect("c")[-1].finished.text), schema)
    compiler.close()


def test_stop_sequences_prefill_logprobs_and_top_n_tokens_on_a_constrained_request(
        harness, compile_for):
    events = run(harness, "d", compile_for("regex", "[0-9]{6}x[0-9]{3}"), 20,
                 prefill_logprobs=True, top_n_tokens=3, stopping={"stop_sequences": ("x",)})
    finished = events[-1].finished
    assert finished.finish_reason is FinishReason.STOP_SEQUENCE
    assert re.fullmatch("[0-9]{6}x", finished.text)
    assert len(events[0].prefill_tokens) == len(PROMPT)
    for event in events:
        # Top tokens come from the masked distribution: the grammar's choices only.
        assert event.top_tokens and all(re.fullmatch("[0-9x]*", t.text)
                                        for t in event.top_tokens)
        assert event.token.logprob <= 0.0


def test_a_constrained_request_reuses_a_cached_prefix_and_keeps_its_output(harness,
                                                                          compile_for):
    pattern = "[a-z]{2,6}(, [a-z]{2,6}){1,3}"
    outputs = []
    for request_id in ("first", "again"):
        seq = Sequence(request_id, PROMPT * 3, stopping=StoppingParams(max_new_tokens=40),
                       constraint=compile_for("regex", pattern))
        assert harness.engine.submit(seq) is None
        outputs.append(harness.collect(request_id))
        assert re.fullmatch(pattern, outputs[-1][-1].finished.text)
    assert seq.num_cached > 0                  # the second copied the first one's prompt KV
    assert token_ids(outputs[0]) == token_ids(outputs[1])


def test_cancelling_a_constrained_request_drops_its_grammar(harness, compile_for):
    constraint = compile_for("regex", "[a-z]{500}")
    harness.submit("gone", PROMPT, 400, constraint=constraint)
    harness.next_event("gone")
    seq = harness.engine.scheduler.running[0]
    harness.engine.abort("gone")
    run(harness, "next", None, 2)         # a step after the abort
    assert seq.constraint is None and not harness.engine.scheduler.running


class BreakingConstraint:
    """Allows every token, then refuses the third one, as a broken grammar would."""
    num_mask_words = 10

    def __init__(self):
        self.num_taken = 0

    def write_mask(self, words) -> None:
        words[:] = -1

    def advance(self, token_id: int) -> str | None:
        self.num_taken += 1
        return "grammar: broken" if self.num_taken == 3 else None

    is_complete = False


def test_a_grammar_that_breaks_fails_its_request_alone(harness):
    harness.submit("other", PROMPT, 12, stopping=LONG)
    events = run(harness, "broken", BreakingConstraint(), 12, stopping=LONG)
    assert events[-1].error == "grammar: broken" and len(events) == 3
    assert harness.collect("other")[-1].finished.generated_tokens == 12
    assert harness.engine.is_alive


# -- padded vocabulary -----------------------------------------------------------------
@pytest.fixture(scope="module")
def padded_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with 13 logits past its tokenizer's last token, as padded vocabularies
    have (their rows here made the likeliest, so only the mask keeps them out)."""
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("padded")
    shutil.copy(tiny_model_dir / "tokenizer.json", path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    num_tokens = model.config.vocab_size
    model.resize_token_embeddings(num_tokens + 13)
    with torch.no_grad():
        model.get_input_embeddings().weight[num_tokens:] = model.model.norm.weight * 5
    model.save_pretrained(path)
    return path


def test_logits_past_the_tokenizer_are_masked_off(harness_factory, padded_model_dir):
    from tests.shard.conftest import Harness

    harness = Harness(padded_model_dir)
    try:
        num_tokens = Tokenizer.from_file(str(padded_model_dir / "tokenizer.json")).get_vocab_size()
        harness.submit("free", PROMPT, 8, stopping=LONG)
        assert max(token_ids(harness.collect("free"))) >= num_tokens    # the padding wins
        compiler = build_grammar_compiler(harness.engine, (harness.info.model_dir / "tokenizer.json").read_text())
        events = run(harness, "held", compiler.compile(GrammarSpec("regex", "[a-z]{3,9}")))
        assert max(token_ids(events)) < num_tokens
        assert re.fullmatch("[a-z]{3,9}", events[-1].finished.text)
        compiler.close()
    finally:
        harness.close()


# -- masks and the compiler ------------------------------------------------------------
def test_eos_is_allowed_exactly_when_the_grammar_is_complete(harness, compile_for):
    tokenizer = harness.engine.tokenizer
    eos = 2
    constraint = compile_for("regex", "(a|ab)c?")
    assert not allowed_tokens([constraint], 400)[0][0, eos]
    assert constraint.advance(tokenizer.token_to_id("a")) is None
    allowed, errors = allowed_tokens([constraint], 400)
    assert allowed.shape == (1, 400) and errors == [None]
    assert allowed[0, eos] and allowed[0, tokenizer.token_to_id("b")]
    assert not allowed[0, tokenizer.token_to_id("a")] and not allowed[0, 330:].any()
    assert constraint.advance(tokenizer.token_to_id("a")).startswith("grammar: ")


def test_compiled_grammars_are_cached_but_each_request_gets_its_own_state(tiny_model_dir):
    compiler = GrammarCompiler((tiny_model_dir / "tokenizer.json").read_text(), frozenset({2}), 320,
                               max_cached=2)
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    first, second = (compiler.compile(GrammarSpec("regex", "ab")) for _ in range(2))
    assert len(compiler._cache) == 1
    assert first.advance(tokenizer.token_to_id("a")) is None
    assert second.advance(tokenizer.token_to_id("b")) is not None     # still at the start
    for pattern in ("x", "y", "z"):
        compiler.compile(GrammarSpec("regex", pattern))
    assert list(compiler._cache) == [("regex", "y"), ("regex", "z")]
    compiler.compile(GrammarSpec("json_schema", "true"))     # any JSON: a boolean schema
    compiler.close()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread priority is Linux's")
def test_grammars_compile_at_a_lower_priority_than_the_engine(tiny_model_dir):
    compiler = GrammarCompiler((tiny_model_dir / "tokenizer.json").read_text(), frozenset({2}), 320)
    niceness = compiler._executor.submit(
        lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    assert niceness >= os.getpriority(os.PRIO_PROCESS, 0) + 1
    compiler.close()


@pytest.mark.parametrize("kind, value, message", [
    ("regex", "[a-", "unclosed character class"),
    ("json_schema", '{"type": "bogus"}', "bogus"),
    ("json_schema", "{not json", "key must be a string"),
    ("json_schema", "[1, 2]", "object schema"),
    ("json_schema", "false", "Unsatisfiable"),
    ("type 9", "x", "unsupported grammar type"),
])
def test_a_grammar_that_does_not_compile_is_refused_with_llguidances_message(
        tiny_model_dir, kind, value, message):
    compiler = GrammarCompiler((tiny_model_dir / "tokenizer.json").read_text(), frozenset({2}), 320)
    for _ in range(2):     # refusals are cached too
        with pytest.raises(GrammarError, match=re.escape(message)) as refused:
            compiler.compile(GrammarSpec(kind, value))
        assert str(refused.value)
    compiler.close()


def test_wire_reads_the_grammar():
    def read(**grammar):
        return wire.to_sequence(shard_pb2.GenerateRequest(
            input_ids=[1], grammar=shard_pb2.Grammar(**grammar))).grammar

    assert wire.to_sequence(shard_pb2.GenerateRequest(input_ids=[1])).grammar is None
    assert read(type=shard_pb2.GRAMMAR_TYPE_NONE, value="x") is None
    assert read(type=shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, value="{}") == GrammarSpec(
        "json_schema", "{}")
    assert read(type=shard_pb2.GRAMMAR_TYPE_REGEX, value="a+") == GrammarSpec("regex", "a+")
    assert read(type=7, value="a") == GrammarSpec("type 7", "a")
