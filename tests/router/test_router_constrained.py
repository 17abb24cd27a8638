"""Constrained requests that are not tools, at the router, against the scripted fake shard
over real HTTP and gRPC: on `response_format` (chat) and TGI `grammar` (/generate) requests
usage, logprobs and top logprobs, seeds and stop strings still reach the shard beside the
grammar and come back; a client that drops a constrained stream cancels its shard call;
and the router compiles each distinct grammar once, keeping the last 64."""

from __future__ import annotations

import json

import jsonschema
import pytest
import requests

from router.grammar import MAX_CACHED_GRAMMARS, check_grammar, compile_error
from router.schemas import Grammar
from tests.router.support import RawHttp, wait_until
from tests.router.test_router_openai import sse_chunks

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
ANSWER = ['{"name', '": "', 'Ann', '", "age', '": 3', '4}']  # the scripted tokens' texts
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "Person", "schema": PERSON}}
GRAMMAR = {"type": "json", "value": PERSON}


@pytest.fixture
def stack(make_stack):
    stack = make_stack()
    stack.fake.script.output_texts = ANSWER
    return stack


def chat(stack, **body) -> requests.Response:
    return requests.post(stack.url + "/v1/chat/completions", timeout=10, json={
        "model": "m", "messages": [{"role": "user", "content": "hello"}], "response_format": JSON_FORMAT, **body})


def generate(stack, path: str = "/generate", **parameters) -> requests.Response:
    return requests.post(stack.url + path, timeout=10, json={
        "inputs": "hello world", "parameters": {"grammar": GRAMMAR, "details": True, **parameters}})


def sent(stack):
    """The last shard call, which must carry the grammar."""
    request = stack.fake.requests[-1]
    assert request.HasField("grammar") and json.loads(request.grammar.value) == PERSON
    return request


def test_chat_usage_logprobs_and_seed(stack):
    body = chat(stack, logprobs=True, top_logprobs=2, seed=11, temperature=0.7).json()
    choice = body["choices"][0]
    jsonschema.validate(json.loads(choice["message"]["content"]), PERSON)
    assert choice["finish_reason"] == "stop"
    request = sent(stack)
    num_prompt = len(request.input_ids)  # "user: hello\nassistant:", five of the fake's tokens
    assert body["usage"] == {"prompt_tokens": num_prompt, "completion_tokens": 7, "total_tokens": num_prompt + 7}
    content = choice["logprobs"]["content"]  # EOS too, as on unconstrained answers
    assert [entry["token"] for entry in content] == [*ANSWER, "</s>"]
    assert all(len(entry["top_logprobs"]) == 2 for entry in content)
    assert request.top_n_tokens == 2 and request.sampling.do_sample and request.sampling.seed == 11


def test_chat_stream_usage_and_logprobs(stack):
    chunks = sse_chunks(chat(stack, stream=True, logprobs=True, top_logprobs=1, seed=3,
                             stream_options={"include_usage": True}))
    choices = [choice for chunk in chunks for choice in chunk["choices"]]
    text = "".join(choice["delta"].get("content") or "" for choice in choices)
    jsonschema.validate(json.loads(text), PERSON)
    entries = [entry for choice in choices for entry in (choice["logprobs"] or {}).get("content", [])]
    assert [entry["token"] for entry in entries] == [*ANSWER, "</s>"] and all(len(e["top_logprobs"]) == 1 for e in entries)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 7
    assert sent(stack).sampling.seed == 3


def test_chat_stop_strings(stack):
    body = chat(stack, stop=["Ann"]).json()
    assert body["choices"][0]["message"]["content"] == '{"name": "'
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 3
    assert list(sent(stack).stopping.stop_sequences) == ["Ann"]
    chunks = sse_chunks(chat(stack, stop=["Ann"], stream=True))
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks) == '{"name": "'


def test_generate_details_top_tokens_and_seed(stack):
    body = generate(stack, top_n_tokens=2, decoder_input_details=True, do_sample=True, seed=5).json()
    jsonschema.validate(json.loads(body["generated_text"]), PERSON)
    details = body["details"]
    assert details["finish_reason"] == "eos_token" and details["generated_tokens"] == 7
    assert details["seed"] == 5 and [token["text"] for token in details["tokens"]][:-1] == ANSWER
    assert all(token["logprob"] is not None for token in details["tokens"])
    assert len(details["top_tokens"]) == 7 and all(len(top) == 2 for top in details["top_tokens"])
    assert [token["text"] for token in details["prefill"]] == ["<s>", "hello", "world"]
    request = sent(stack)
    assert request.sampling.seed == 5 and request.top_n_tokens == 2 and request.prefill_logprobs


def test_generate_stop_strings(stack):
    body = generate(stack, stop=["Ann"]).json()
    assert body["generated_text"] == '{"name": "Ann' and body["details"]["finish_reason"] == "stop_sequence"
    assert list(sent(stack).stopping.stop_sequences) == ["Ann"]
    response = generate(stack, "/generate_stream", stop=["Ann"], top_n_tokens=1)
    events = [json.loads(line[len(b"data:"):]) for line in response.content.split(b"\n") if line.startswith(b"data:")]
    assert events[-1]["generated_text"] == '{"name": "Ann'
    assert events[-1]["details"]["finish_reason"] == "stop_sequence"
    assert all(len(event["top_tokens"]) == 1 for event in events)


@pytest.mark.parametrize("path, body", [
    ("/generate_stream", {"inputs": "hello", "parameters": {"max_new_tokens": 40, "grammar": GRAMMAR}}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 40,
                              "stream": True, "response_format": JSON_FORMAT}),
], ids=["generate_stream", "chat"])
def test_dropping_a_constrained_stream_cancels_the_shard_call(stack, path, body):
    stack.fake.script.output_texts = None  # 40 tokens: the call is still running when the client leaves
    stack.fake.script.token_delay_s = 0.02
    client = RawHttp(stack.url, path, body, headers={"x-request-id": "leaver"})
    client.read_until(b"data: ", count=3)
    sent(stack)
    client.close()
    assert wait_until(lambda: stack.fake.cancelled == [stack.fake.requests[-1].request_id], timeout_s=2.0)
    assert wait_until(lambda: stack.fake.num_active == 0 and stack.state.admission.num_in_flight == 0)
    assert len(stack.fake.requests) == 1


# The router's cache of compiled grammars.

def test_a_second_identical_grammar_is_not_compiled_again(stack):
    schema = {**PERSON, "title": "once"}  # a grammar no other test compiles
    before = compile_error.cache_info()
    for _ in range(2):
        response = requests.post(stack.url + "/generate", timeout=10, json={
            "inputs": "hello", "parameters": {"max_new_tokens": 1, "grammar": {"type": "json", "value": schema}}})
        assert response.status_code == 200
    # The same schema sent as JSON text, on another route, is the same compact text.
    assert chat(stack, max_tokens=1, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": json.dumps(schema, indent=2)}}).status_code == 200
    after = compile_error.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)


def test_refusals_are_kept_too_and_the_cache_is_bounded():
    bad = Grammar("regex", "(unclosed-once")
    before = compile_error.cache_info()
    messages = []
    for _ in range(2):
        with pytest.raises(Exception) as refused:
            check_grammar(bad, 100)
        messages.append(str(refused.value))
    assert messages[0] == messages[1] and "invalid regex: unclosed group" in messages[0]
    after = compile_error.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    assert after.maxsize == MAX_CACHED_GRAMMARS == 64
    first = Grammar("regex", "first-of-many")
    check_grammar(first, 100)
    for index in range(MAX_CACHED_GRAMMARS):  # each newer grammar pushes an older one out
        check_grammar(Grammar("regex", f"filler-{index}"), 100)
    misses = compile_error.cache_info().misses
    check_grammar(first, 100)
    assert compile_error.cache_info().misses == misses + 1 and compile_error.cache_info().currsize == 64
