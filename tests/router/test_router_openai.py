"""The OpenAI routes against scripted shards, at the HTTP level: the exact objects and
stream endings, the chat template, the parameter mapping onto the shard request, stop
strings kept out of every chunk, several prompts at once, limits, errors and disconnects."""

from __future__ import annotations

import json

import pytest
import requests

from tests.fakes import BOS_ID, VOCAB, output_text
from tests.router.support import RawHttp, parse_sse, wait_until

UNK = VOCAB["[UNK]"]
CHAT = {"model": "anything", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 3}


def post(stack, path: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(stack.url + path, json=body, timeout=10, **kwargs)


def sse_chunks(response: requests.Response) -> list[dict]:
    """The chunks of an OpenAI stream, which must end with exactly one `data: [DONE]`."""
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/event-stream"
    body = response.content
    assert body.endswith(b"\n\ndata: [DONE]\n\n") and body.count(b"[DONE]") == 1
    return parse_sse(body[:-len(b"data: [DONE]\n\n")])


def test_chat_completion_object(stack):
    response = post(stack, "/v1/chat/completions", CHAT)
    assert response.status_code == 200
    body = response.json()
    # The router's own id: a client's x-request-id may repeat.
    assert body["id"].startswith("chatcmpl-") and response.headers["x-request-id"] not in body["id"]
    assert body["object"] == "chat.completion" and body["model"] == "fake-org/fake-model"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": output_text(3)},
                                "logprobs": None, "finish_reason": "length"}]
    # "user: hello world\nassistant:" from the template, with no BOS in front.
    assert list(stack.fake.requests[-1].input_ids) == [UNK, UNK, VOCAB["hello"], VOCAB["world"], UNK, UNK]
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
    assert response.headers["x-generated-tokens"] == "3"


def test_chat_stream_chunks_final_chunk_usage_then_done(stack):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = sse_chunks(post(stack, "/v1/chat/completions", body))
    assert [chunk["object"] for chunk in chunks] == ["chat.completion.chunk"] * 4
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks[:3]]
    assert deltas == [{"role": "assistant", "content": text} for text in (" the", " cat", " sat")]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:3]] == [None, None, "length"]
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["completion_tokens"] == 3
    assert sse_chunks(post(stack, "/v1/chat/completions", {**CHAT, "stream": True}))[-1]["usage"] is None


def test_continuous_usage_stats_puts_usage_so_far_on_every_chunk(stack):
    """vLLM's extension. A usage-only chunk still needs include_usage."""
    body = {**CHAT, "stream": True, "stream_options": {"continuous_usage_stats": True}}
    chunks = sse_chunks(post(stack, "/v1/chat/completions", body))
    assert [chunk["usage"] for chunk in chunks] == [
        {"prompt_tokens": 6, "completion_tokens": done, "total_tokens": 6 + done} for done in (1, 2, 3)]
    assert all(chunk["choices"] for chunk in chunks)      # no usage-only chunk
    completion = {"model": "m", "prompt": ["a", "b c"], "max_tokens": 3, "stream": True,
                  "stream_options": {"continuous_usage_stats": True, "include_usage": True}}
    chunks = sse_chunks(post(stack, "/v1/completions", completion))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    per_choice = {}
    for chunk in chunks[:-1]:
        per_choice.setdefault(chunk["choices"][0]["index"], []).append(chunk["usage"]["completion_tokens"])
    assert per_choice == {0: [1, 2, 3], 1: [1, 2, 3]}
    assert sse_chunks(post(stack, "/v1/chat/completions", {**CHAT, "stream": True}))[0]["usage"] is None


def test_eos_is_stop_and_not_in_the_content(stack):
    stack.fake.script.eos_after = 2
    body = post(stack, "/v1/chat/completions", {**CHAT, "max_tokens": None}).json()
    assert body["choices"][0]["message"]["content"] == output_text(2)
    assert body["choices"][0]["finish_reason"] == "stop"
    chunks = sse_chunks(post(stack, "/v1/chat/completions", {**CHAT, "stream": True}))
    assert chunks[-1]["choices"][0]["delta"]["content"] == ""  # the EOS token itself
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_parameters_reach_the_shard(stack):
    post(stack, "/v1/chat/completions", {**CHAT, "max_tokens": None, "max_completion_tokens": 5, "seed": 7,
                                         "temperature": 0.5, "top_p": 0.9, "frequency_penalty": 0.5,
                                         "presence_penalty": -0.25, "stop": " mat"})
    request = stack.fake.requests[-1]
    assert request.stopping.max_new_tokens == 5 and list(request.stopping.stop_sequences) == [" mat"]
    sampling = request.sampling
    assert sampling.do_sample and sampling.seed == 7 and sampling.frequency_penalty == 0.5
    assert sampling.presence_penalty == -0.25
    assert sampling.temperature == pytest.approx(0.5) and sampling.top_p == pytest.approx(0.9)
    # temperature 0 is greedy, and OpenAI's top_p 1 means "off" (TGI would refuse it).
    post(stack, "/v1/chat/completions", {**CHAT, "temperature": 0, "top_p": 1.0})
    sampling = stack.fake.requests[-1].sampling
    assert not sampling.do_sample and sampling.temperature == 1.0 and sampling.top_p == 1.0
    post(stack, "/v1/chat/completions", {**CHAT, "max_tokens": None})  # no hidden small default
    request = stack.fake.requests[-1]
    assert request.stopping.max_new_tokens == 64 - len(request.input_ids)


def test_stop_string_is_never_sent(stack):
    chat = {**CHAT, "max_tokens": 10, "stop": [" on the mat"]}
    body = post(stack, "/v1/chat/completions", chat).json()
    assert body["choices"][0]["message"]["content"] == " the cat sat"
    assert body["choices"][0]["finish_reason"] == "stop"
    chunks = sse_chunks(post(stack, "/v1/chat/completions", {**chat, "stream": True}))
    # " on" and " the" could begin the stop string, so they wait; then the stop ends it.
    assert [chunk["choices"][0]["delta"]["content"] for chunk in chunks] == [" the", " cat", " sat", "", "", ""]


def test_held_back_text_is_released_when_it_is_not_a_stop(stack):
    completion = {"prompt": "hello", "max_tokens": 6, "stop": [" sat on the rug"], "stream": True}
    chunks = sse_chunks(post(stack, "/v1/completions", completion))
    texts = [chunk["choices"][0]["text"] for chunk in chunks]
    assert texts == [" the", " cat", "", "", "", " sat on the mat"]
    assert [chunk["token"]["text"] for chunk in chunks] == texts  # what `r.token.text` loops print
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_completions_accept_the_js_client_body(stack):
    body = {"model": stack.url, "max_tokens": 3, "details": True, "prompt": "hello"}
    response = post(stack, "/v1/completions", body)
    assert response.status_code == 200
    assert response.json()["object"] == "text_completion"
    assert response.json()["choices"] == [{"index": 0, "text": output_text(3), "logprobs": None,
                                           "finish_reason": "length"}]
    assert list(stack.fake.requests[-1].input_ids) == [BOS_ID, VOCAB["hello"]]  # plain prompts keep BOS


def test_completion_stream_chunks_carry_tgi_tokens(stack):
    chunks = sse_chunks(post(stack, "/v1/completions", {"prompt": "hello", "max_tokens": 2, "stream": True}))
    assert [chunk["object"] for chunk in chunks] == ["text_completion"] * 2
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None, "length"]
    first = chunks[0]["token"]
    assert first == {"id": VOCAB["the"], "text": " the", "logprob": first["logprob"], "special": False}


def test_several_prompts(stack):
    body = {"prompt": ["hello", "the cat"], "max_tokens": 2}
    response = post(stack, "/v1/completions", body)
    assert [choice["index"] for choice in response.json()["choices"]] == [0, 1]
    assert response.json()["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    chunks = sse_chunks(post(stack, "/v1/completions", {**body, "stream": True}))
    for index in (0, 1):
        mine = [chunk["choices"][0] for chunk in chunks if chunk["choices"][0]["index"] == index]
        assert "".join(choice["text"] for choice in mine) == output_text(2)
        assert mine[-1]["finish_reason"] == "length"
    too_many = post(stack, "/v1/completions", {"prompt": ["hello"] * 33, "max_tokens": 1})
    assert too_many.status_code == 422
    assert "maximum allowed batch size of 32" in too_many.json()["error"]["message"]


def test_logprobs(stack):
    body = post(stack, "/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 2}).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert [entry["token"] for entry in content] == [" the", " cat", " sat"]
    assert content[0]["bytes"] == list(b" the") and len(content[0]["top_logprobs"]) == 2
    assert stack.fake.requests[-1].top_n_tokens == 2
    legacy = post(stack, "/v1/completions", {"prompt": "hello", "max_tokens": 2, "logprobs": 1}).json()
    logprobs = legacy["choices"][0]["logprobs"]
    assert logprobs["tokens"] == [" the", " cat"] and logprobs["text_offset"] == [0, 4]
    assert [list(top) for top in logprobs["top_logprobs"]] == [[" hello"], [" hello"]]


def test_models(stack):
    response = requests.get(stack.url + "/v1/models", timeout=5)
    assert response.json() == {"object": "list", "data": [
        {"id": "fake-org/fake-model", "object": "model", "created": 0, "owned_by": "fake-org/fake-model"}]}


@pytest.mark.parametrize("path, body, message", [
    ("/v1/chat/completions", {**CHAT, "n": 0}, "`n` must be at least 1"),
    ("/v1/chat/completions", {**CHAT, "presence_penalty": 2.5}, "`presence_penalty` must be >= -2.0 and <= 2.0"),
    ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, "`top_logprobs` needs `logprobs`"),
    ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 9}, "`top_logprobs` must be >= 0 and <= 5"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, "`max_tokens` must be strictly positive"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 100}, "must be <= 64. Given: 6 `inputs` tokens and 100"),
    ("/v1/chat/completions", {"messages": []}, "`messages` cannot be empty"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "content of type `image_url` is not supported"),
    ("/v1/chat/completions", {"model": "x"}, "missing field `messages`"),
    ("/v1/chat/completions", {**CHAT, "temperature": "hot"}, "temperature: invalid type"),
    ("/v1/completions", {"prompt": []}, "Empty array detected"),
    ("/v1/completions", {"prompt": "hello", "suffix": "!"}, "Suffix is not supported"),
])
def test_validation_errors(stack, path, body, message):
    response = post(stack, path, {**body, "stream": True})
    assert response.status_code == 422, response.text  # before the stream starts
    error = response.json()
    assert message in error["error"]["message"] and error["error"]["code"] == 422
    assert error["error_type"] == error["error"]["type"] and error["error_type"] in ("validation",)
    assert response.headers["Content-Length"]


def test_chat_text_parts_are_joined(stack):
    parts = [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]
    post(stack, "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": parts}]})
    assert list(stack.fake.requests[-1].input_ids)[2:4] == [VOCAB["hello"], VOCAB["world"]]


def test_overload_is_a_429_with_retry_after(make_stack):
    stack = make_stack(max_concurrent_requests=1)
    stack.fake.script.block = True
    held = RawHttp(stack.url, "/v1/chat/completions", {**CHAT, "stream": True})
    assert wait_until(lambda: stack.state.admission.num_in_flight == 1)
    response = post(stack, "/v1/completions", {"prompt": "hello"})
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert response.json() == {"error": {"message": "Model is overloaded", "type": "overloaded", "param": None,
                                         "code": 429}, "error_type": "overloaded"}
    held.close()


def test_error_mid_stream_is_the_last_event_without_done(stack):
    stack.fake.script.fail_after = 2
    response = post(stack, "/v1/chat/completions", {**CHAT, "max_tokens": 5, "stream": True})
    events = parse_sse(response.content)
    assert b"[DONE]" not in response.content and len(events) == 3
    assert events[-1]["error_type"] == "generation"
    assert events[-1]["error"]["message"].startswith("Request failed during generation")


@pytest.mark.parametrize("streaming", [True, False])
def test_disconnect_cancels_every_shard_call(stack, streaming):
    stack.fake.script.token_delay_s = 0.02
    body = {"prompt": ["hello", "the cat"], "max_tokens": 60, "stream": streaming}
    client = RawHttp(stack.url, "/v1/completions", body, headers={"x-request-id": "gone"})
    if streaming:
        client.read_until(b"data: ", count=3)
    else:
        assert wait_until(lambda: stack.fake.num_active == 2)
    client.close()
    assert wait_until(lambda: sorted(stack.fake.cancelled) == sorted(r.request_id for r in stack.fake.requests)
                      and len(stack.fake.cancelled) == 2, timeout_s=1.0)
    assert wait_until(lambda: stack.state.admission.num_in_flight == 0)


def test_api_key_protects_the_generation_routes(make_stack):
    stack = make_stack(api_key="secret")
    assert post(stack, "/v1/chat/completions", CHAT).status_code == 401
    assert post(stack, "/v1/completions", {"prompt": "hello"}).status_code == 401
    assert post(stack, "/v1/completions", {"prompt": "hello", "max_tokens": 1},
                headers={"Authorization": "Bearer secret"}).status_code == 200
    assert requests.get(stack.url + "/v1/models", timeout=5).status_code == 200


def test_malformed_json_uses_the_openai_shape(stack):
    response = requests.post(stack.url + "/v1/completions", data=b"{", timeout=5,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and json.loads(response.text)["error"]["type"] == "validation"
