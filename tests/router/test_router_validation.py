"""Request validation over real HTTP: TGI's exact messages and check order, JSON errors
for bodies TGI would answer in plain text, and what reaches the shard."""

from __future__ import annotations

import pytest
import requests

from tests.fakes import VOCAB

PREFIX = "Input validation error: "


def words(count: int) -> str:
    """A prompt of `count` known words: count + 1 tokens with BOS."""
    return " ".join(["hello"] * count)


def post(stack, body, path="/generate", **kwargs) -> requests.Response:
    return requests.post(stack.url + path, json=body, timeout=10, **kwargs)


def assert_json_error(response: requests.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert int(response.headers["Content-Length"]) == len(response.content)
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type
    return body["error"]


@pytest.mark.parametrize("parameters, message", [
    ({"temperature": 0}, "`temperature` must be strictly positive"),
    ({"temperature": -1.5}, "`temperature` must be strictly positive"),
    ({"repetition_penalty": 0.0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_p": 0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"top_k": -3}, "`top_k` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 2, "do_sample": True, "seed": 3}, "`seed` must not be set when `best_of` > 1"),
    ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"truncate": 0}, "`truncate` must be strictly positive and less than 63. Given: 0"),
    ({"truncate": 64}, "`truncate` must be strictly positive and less than 63. Given: 64"),
    ({"max_new_tokens": 60}, "`inputs` tokens + `max_new_tokens` must be <= 64. "
                             "Given: 5 `inputs` tokens and 60 `max_new_tokens`"),
    ({"grammar": {"type": "json", "value": {"type": "banana"}}}, "grammar is not valid: Invalid type: banana"),
    ({"adapter_id": "my-lora"}, "`adapter_id` is not supported: this server does not load LoRA adapters"),
    # The first failing check wins, in TGI's order.
    ({"temperature": 0, "top_p": 1.0, "top_k": 0}, "`temperature` must be strictly positive"),
    ({"best_of": 2, "temperature": 0}, "`temperature` must be strictly positive"),
    ({"top_k": 0, "max_new_tokens": 0}, "`top_k` must be strictly positive"),
    ({"stop": ["a"] * 5, "top_n_tokens": 9}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"max_new_tokens": 60, "grammar": {"type": "regex", "value": "("}},  # the grammar is checked last
     "`inputs` tokens + `max_new_tokens` must be <= 64. Given: 5 `inputs` tokens and 60 `max_new_tokens`"),
])
def test_parameter_messages(stack, parameters, message):
    response = post(stack, {"inputs": words(4), "parameters": parameters})
    assert assert_json_error(response, 422, "validation") == PREFIX + message
    assert stack.fake.requests == []


@pytest.mark.parametrize("inputs, parameters, message", [
    ("", {}, "`inputs` cannot be empty"),
    # MaxTotalTokens is checked before InputLength: an over-long prompt reports 0 new tokens...
    (words(65), {}, "`inputs` tokens + `max_new_tokens` must be <= 64. "
                    "Given: 66 `inputs` tokens and 0 `max_new_tokens`"),
    # ...and one that fills the context exactly fails InputLength.
    (words(63), {}, "`inputs` must have less than 63 tokens. Given: 64"),
])
def test_input_messages(stack, inputs, parameters, message):
    response = post(stack, {"inputs": inputs, "parameters": parameters})
    assert assert_json_error(response, 422, "validation") == PREFIX + message


def test_boundaries_accepted(stack):
    ok = {"frequency_penalty": -2.0, "top_p": 0.99, "typical_p": 0.01, "top_k": 1, "seed": 0,
          "top_n_tokens": 0, "stop": ["a"] * 4, "max_new_tokens": 2, "best_of": 1}
    assert post(stack, {"inputs": words(2), "parameters": ok}).status_code == 200
    assert post(stack, {"inputs": words(62), "parameters": {"max_new_tokens": 1}}).status_code == 200


@pytest.mark.parametrize("path", ["/generate_stream", "/"])
@pytest.mark.parametrize("parameters, message", [
    ({"best_of": 2, "do_sample": True}, "`best_of` != 1 is not supported when streaming tokens"),
    ({"best_of": 0}, "`best_of` != 1 is not supported when streaming tokens"),
    ({"decoder_input_details": True}, "`decoder_input_details` == true is not supported when streaming tokens"),
    ({"temperature": 0}, "`temperature` must be strictly positive"),
])
def test_streaming_errors_are_plain_http_errors(stack, path, parameters, message):
    response = post(stack, {"inputs": "hello", "parameters": parameters, "stream": True}, path=path)
    assert "chunked" not in response.headers.get("Transfer-Encoding", "")
    assert assert_json_error(response, 422, "validation") == PREFIX + message


def test_text_generation_style_nulls_are_unset(stack):
    keys = ["best_of", "decoder_input_details", "details", "do_sample", "frequency_penalty", "grammar",
            "max_new_tokens", "repetition_penalty", "return_full_text", "seed", "stop", "temperature",
            "top_k", "top_n_tokens", "top_p", "truncate", "typical_p", "watermark", "adapter_id"]
    parameters = dict.fromkeys(keys)
    response = post(stack, {"inputs": "hello world", "parameters": parameters, "stream": None}, path="/")
    assert response.status_code == 200, response.text
    sent = stack.fake.requests[0]
    assert sent.stopping.max_new_tokens == 64 - 3  # unset: the rest of the context
    assert not sent.sampling.do_sample and not sent.sampling.HasField("seed")


@pytest.mark.parametrize("data, content_type, status, start", [
    (b'{"inputs": "hi"', "application/json", 400, "Failed to parse the request body as JSON: "),
    (b"inputs=hi", "application/x-www-form-urlencoded", 415,
     "Expected request with `Content-Type: application/json`"),
    (b'{"parameters": {}}', "application/json", 422,
     "Failed to deserialize the JSON body into the target type: missing field `inputs`"),
    (b'["hi"]', "application/json", 422, "Failed to deserialize the JSON body into the target type: "),
    (b'{"inputs": 5}', "application/json", 422,
     "Failed to deserialize the JSON body into the target type: inputs: invalid type: integer `5`"),
    (b'{"inputs": "hi", "parameters": {"temperature": "hot"}}', "application/json", 422,
     'Failed to deserialize the JSON body into the target type: parameters.temperature: invalid type: '
     'string "hot"'),
    (b'{"inputs": "hi", "parameters": {"max_new_tokens": -1}}', "application/json", 422,
     "Failed to deserialize the JSON body into the target type: parameters.max_new_tokens: invalid value"),
    (b'{"inputs": "hi", "parameters": {"stop": "x"}}', "application/json", 422,
     "Failed to deserialize the JSON body into the target type: parameters.stop: invalid type"),
    (b'{"inputs": "hi", "parameters": {"details": 1}}', "application/json", 422,
     "Failed to deserialize the JSON body into the target type: parameters.details: invalid type"),
    (b'{"inputs": "hi", "parameters": {"top_k": 2.5}}', "application/json", 422,
     "Failed to deserialize the JSON body into the target type: parameters.top_k: invalid type: "
     "floating point `2.5`"),
    (b'{"inputs": "hi", "parameters": {"temperature": NaN}}', "application/json", 422,
     "Failed to deserialize the JSON body into the target type: parameters.temperature"),
    (b'{"inputs": "hi", "parameters": []}', "application/json", 422,
     "Failed to deserialize the JSON body into the target type: parameters: invalid type: sequence"),
])
@pytest.mark.parametrize("path", ["/generate", "/generate_stream", "/"])
def test_bad_bodies_get_json_errors(stack, path, data, content_type, status, start):
    response = requests.post(stack.url + path, data=data, headers={"Content-Type": content_type}, timeout=10)
    assert assert_json_error(response, status, "validation").startswith(start)


def test_truncate_keeps_the_last_tokens(stack):
    prompt = "the cat sat on the mat"
    response = post(stack, {"inputs": prompt, "parameters": {"truncate": 3, "max_new_tokens": 2}})
    assert response.status_code == 200
    assert response.headers["x-prompt-tokens"] == "3"
    assert list(stack.fake.requests[0].input_ids) == [VOCAB["on"], VOCAB["the"], VOCAB["mat"]]


def test_parameters_reach_the_shard(stack):
    parameters = {"temperature": 0.5, "top_k": 10, "top_p": 0.9, "typical_p": 0.8, "repetition_penalty": 1.2,
                  "frequency_penalty": 0.5, "seed": 7, "watermark": True, "stop": [" mat"],
                  "max_new_tokens": 9, "decoder_input_details": True, "top_n_tokens": 3, "do_sample": True}
    assert post(stack, {"inputs": "hello", "parameters": parameters}).status_code == 200
    sent = stack.fake.requests[0]
    sampling = sent.sampling
    assert sampling.do_sample and sampling.watermark and sampling.seed == 7 and sampling.top_k == 10
    assert sampling.temperature == pytest.approx(0.5) and sampling.top_p == pytest.approx(0.9)
    assert sampling.typical_p == pytest.approx(0.8) and sampling.repetition_penalty == pytest.approx(1.2)
    assert sampling.frequency_penalty == pytest.approx(0.5)
    assert list(sent.stopping.stop_sequences) == [" mat"] and sent.stopping.max_new_tokens == 9
    assert sent.prefill_logprobs and sent.top_n_tokens == 3
    assert list(sent.input_ids) == [VOCAB["<s>"], VOCAB["hello"]]


def test_unset_parameters_reach_the_shard_as_neutral(stack):
    assert post(stack, {"inputs": "hello", "parameters": {}}).status_code == 200
    sampling = stack.fake.requests[0].sampling
    assert (sampling.temperature, sampling.top_k, sampling.top_p, sampling.typical_p) == (1.0, 0, 1.0, 1.0)
    assert (sampling.repetition_penalty, sampling.frequency_penalty) == (1.0, 0.0)
    assert not sampling.do_sample and not sampling.HasField("seed") and not sampling.watermark


def test_absent_parameters_mean_sampling(stack):
    """TGI quirk: no `parameters` object at all means do_sample=true."""
    assert post(stack, {"inputs": "hello"}).status_code == 200
    assert post(stack, {"inputs": "hello", "parameters": {}}).status_code == 200
    assert [request.sampling.do_sample for request in stack.fake.requests] == [True, False]


def test_request_id_travels(stack):
    response = post(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 1}},
                    headers={"x-request-id": "client-id-42"})
    assert response.headers["x-request-id"] == "client-id-42"
    # The shard call's id is the router's own: the client's stays in logs and this header.
    assert stack.fake.requests[0].request_id not in ("", "client-id-42")
    generated = post(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 1}},
                     headers={"x-request-id": "bad id\twith spaces"})
    assert len(generated.headers["x-request-id"]) == 32
    assert stack.fake.requests[1].request_id != stack.fake.requests[0].request_id
    error = post(stack, {"inputs": ""}, headers={"x-request-id": "failing-1"})
    assert error.status_code == 422 and error.headers["x-request-id"] == "failing-1"
