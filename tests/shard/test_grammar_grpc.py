"""Constrained decoding through `python -m shard` with the default SmolLM2, over real gRPC:
the output validates, bad grammars are refused, compiling never stalls the others, and a
cancelled constrained stream gives its slot back."""
from __future__ import annotations

import contextlib
import json
import threading
import time

import grpc
import jsonschema
import pytest
from tokenizers import Tokenizer

from protos import shard_pb2

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30},
                    "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"], "additionalProperties": False}


def chat(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tokenizer(default_model_dir) -> Tokenizer:
    return Tokenizer.from_file(str(default_model_dir / "tokenizer.json"))


@pytest.fixture
def stub(served_shard):
    return served_shard


def request(tokenizer, request_id, prompt, max_new_tokens, grammar=None, **stopping):
    return shard_pb2.GenerateRequest(
        request_id=request_id, input_ids=tokenizer.encode(prompt).ids,
        sampling=shard_pb2.SamplingParameters(),
        stopping=shard_pb2.StoppingParameters(max_new_tokens=max_new_tokens, **stopping),
        grammar=grammar)


def json_schema(schema) -> shard_pb2.Grammar:
    return shard_pb2.Grammar(type=shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, value=json.dumps(schema))


def load(stub) -> tuple[int, int]:
    health = stub.Health(shard_pb2.HealthRequest(), timeout=5)
    return health.num_running, health.num_waiting


def settles_idle(stub, timeout_s: float = 30) -> bool:
    """Whether the engine holds no request within `timeout_s` (a cancel reaches it on its
    next step, not at once)."""
    deadline = time.monotonic() + timeout_s
    while load(stub) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    return load(stub) == (0, 0)


def test_the_default_model_answers_in_json_that_validates(stub, tokenizer):
    prompt = chat("Describe a fictional person as JSON with a name, an age and hobbies.")
    responses = list(stub.Generate(request(tokenizer, "person", prompt, 160,
                                           json_schema(PERSON)), timeout=300))
    final = responses[-1].generated_text
    assert final.finish_reason == shard_pb2.FINISH_REASON_EOS_TOKEN, final.text
    jsonschema.validate(json.loads(final.text), PERSON)
    assert final.text == "".join(r.token.text for r in responses)


@pytest.mark.parametrize("grammar, message", [
    (shard_pb2.Grammar(type=shard_pb2.GRAMMAR_TYPE_REGEX, value="[a-"),
     "unclosed character class"),
    (shard_pb2.Grammar(type=shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, value='{"type": "bogus"}'),
     "bogus"),
    (shard_pb2.Grammar(type=shard_pb2.GRAMMAR_TYPE_JSON_SCHEMA, value="{not json"),
     "key must be a string"),
    (shard_pb2.Grammar(type=7, value="x"), "unsupported grammar type"),
], ids=["regex", "schema", "not-json", "unknown-type"])
def test_a_grammar_that_does_not_compile_is_invalid_argument(stub, tokenizer, grammar,
                                                             message):
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Generate(request(tokenizer, "bad", chat("Hi"), 8, grammar), timeout=60))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details()
    # The engine goes on.
    assert stub.Health(shard_pb2.HealthRequest(), timeout=5).num_running == 0
    assert list(stub.Generate(request(tokenizer, "after", chat("Hi"), 2)))[-1].generated_text


def huge_schema(num_fields: int) -> dict:
    """Seconds of compiling: many nested objects, each with its own patterns and enums."""
    field = {"type": "object", "properties": {
        "a": {"type": "string", "pattern": "^[a-z]{3,8}$"},
        "b": {"enum": [f"v{j}" for j in range(20)]},
        "c": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 1000}}},
        "required": ["a", "b"]}
    return {"type": "object", "properties": {f"field_{i}": field for i in range(num_fields)},
            "required": [f"field_{i}" for i in range(0, num_fields, 2)]}


def test_a_huge_schema_compiles_while_another_request_keeps_streaming(stub, tokenizer):
    arrivals: list[float] = []
    stream = stub.Generate(request(tokenizer, "stream", chat("Tell me a long story."), 2000,
                                   ignore_eos_token=True), timeout=300)
    next(stream)

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):      # cancelled at the end
            for _ in stream:
                arrivals.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = time.monotonic()
    constrained = stub.Generate(request(tokenizer, "huge", chat("Fill the form."), 4,
                                        json_schema(huge_schema(3000))), timeout=300)
    next(constrained)                         # compiled, prefilled, one token
    first = time.monotonic()
    constrained.cancel()
    stream.cancel()
    reader.join(timeout=30)
    assert settles_idle(stub)
    window = [sent] + [t for t in arrivals if sent < t < first] + [first]
    longest_gap = max(b - a for a, b in zip(window, window[1:]))
    # Blocked by the compile, the stream would show one gap of about the whole window.
    assert first - sent > 0.5, "the schema compiled too fast to tell anything"
    assert longest_gap < (first - sent) / 2, (longest_gap, first - sent, len(window))


def test_a_cancelled_constrained_stream_frees_its_slot(stub, tokenizer):
    schema = {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 500}
    stream = stub.Generate(request(tokenizer, "leaver", chat("List many words."), 1000,
                                   json_schema(schema)), timeout=300)
    next(stream)                              # compiled, prefilled, taking tokens
    assert load(stub) == (1, 0)
    stream.cancel()
    assert settles_idle(stub)
    # The engine goes on, constrained requests too.
    after = list(stub.Generate(request(tokenizer, "after", chat("Answer yes or no."), 4,
                                       shard_pb2.Grammar(type=shard_pb2.GRAMMAR_TYPE_REGEX,
                                                         value="(yes|no)")), timeout=120))
    assert after[-1].generated_text.text in ("yes", "no") and load(stub) == (0, 0)
