"""/generate, POST / and the small routes: response shapes, headers and errors."""

from __future__ import annotations

import requests

from tests.fakes import VOCAB, output_text
from tests.router.support import parse_sse, wait_until


def post(stack, body, path="/generate", **kwargs) -> requests.Response:
    return requests.post(stack.url + path, json=body, timeout=10, **kwargs)


def test_plain_answer_has_only_generated_text(stack):
    response = post(stack, {"inputs": "hello world", "parameters": {"max_new_tokens": 4}})
    assert response.status_code == 200
    assert response.json() == {"generated_text": output_text(4)}


def test_details_shape(stack):
    response = post(stack, {"inputs": "hello world", "parameters": {"max_new_tokens": 3, "details": True}})
    details = response.json()["details"]
    assert list(details) == ["finish_reason", "generated_tokens", "seed", "prefill", "tokens"]
    assert details["finish_reason"] == "length" and details["generated_tokens"] == 3
    assert details["seed"] is None and details["prefill"] == []
    assert details["tokens"][0] == {"id": VOCAB["the"], "text": " the", "logprob": -0.1, "special": False}
    assert [token["text"] for token in details["tokens"]] == [" the", " cat", " sat"]


def test_prefill_and_top_tokens(stack):
    parameters = {"max_new_tokens": 2, "decoder_input_details": True, "top_n_tokens": 2}
    details = post(stack, {"inputs": "hello world", "parameters": parameters}).json()["details"]
    assert details["prefill"] == [
        {"id": VOCAB["<s>"], "text": "<s>", "logprob": None},  # NaN on the wire -> null
        {"id": VOCAB["hello"], "text": "hello", "logprob": -2.0},
        {"id": VOCAB["world"], "text": "world", "logprob": -3.0},
    ]
    assert len(details["top_tokens"]) == 2
    assert details["top_tokens"][0] == [
        {"id": VOCAB["hello"], "text": " hello", "logprob": -0.5, "special": False},
        {"id": VOCAB["world"], "text": " world", "logprob": -1.0, "special": False},
    ]


def test_finish_reasons_seed_and_full_text(stack):
    stop = post(stack, {"inputs": "hello", "parameters": {"stop": [" sat"], "details": True}}).json()
    assert stop["generated_text"] == " the cat sat" and stop["details"]["finish_reason"] == "stop_sequence"
    stack.fake.script.eos_after = 2
    eos = post(stack, {"inputs": "hello", "parameters": {"details": True, "do_sample": True, "seed": 5}}).json()
    assert eos["details"]["finish_reason"] == "eos_token" and eos["details"]["seed"] == 5
    assert eos["details"]["tokens"][-1]["special"] is True
    full = post(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 2, "return_full_text": True}}).json()
    assert full["generated_text"] == "hello" + output_text(2)


def test_best_of(stack):
    parameters = {"best_of": 2, "do_sample": True, "max_new_tokens": 3, "details": True}
    response = post(stack, {"inputs": "hello", "parameters": parameters}, headers={"x-request-id": "bo"})
    details = response.json()["details"]
    # Each shard call has an id of the router's own, never derived from the client's.
    call_ids = {request.request_id for request in stack.fake.requests}
    assert len(call_ids) == 2 and not any(call_id.startswith("bo") for call_id in call_ids)
    (other,) = details["best_of_sequences"]
    assert list(other) == ["generated_text", "finish_reason", "generated_tokens", "seed", "prefill", "tokens"]

    def mean(tokens):
        return sum(token["logprob"] for token in tokens) / len(tokens)

    assert mean(details["tokens"]) >= mean(other["tokens"])
    assert details["seed"] != other["seed"]


def test_timing_headers(stack):
    response = post(stack, {"inputs": "hello world", "parameters": {"max_new_tokens": 5}})
    headers = response.headers
    assert headers["x-compute-type"] == "gpu+optimized"
    assert float(headers["x-compute-time"]) > 0
    assert headers["x-compute-characters"] == "11"
    assert headers["x-prompt-tokens"] == "3" and headers["x-generated-tokens"] == "5"
    times = {name: int(headers[f"x-{name}-time"]) for name in ("total", "validation", "queue", "inference")}
    assert times["queue"] == 3  # the fake reports 3 ms in its queue
    assert times["total"] >= times["queue"] + times["inference"]
    assert int(headers["x-time-per-token"]) == times["inference"] // 5
    assert int(headers["Content-Length"]) == len(response.content)


def test_compat_route_lists_or_streams(stack):
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 2, "details": True}}
    listed = post(stack, body, path="/")
    assert listed.status_code == 200 and isinstance(listed.json(), list) and len(listed.json()) == 1
    assert listed.json()[0]["generated_text"] == output_text(2)
    assert listed.headers["x-generated-tokens"] == "2"
    streamed = post(stack, {**body, "stream": True}, path="/")
    assert streamed.headers["Content-Type"] == "text/event-stream"
    events = parse_sse(streamed.content)
    assert [event["index"] for event in events] == [1, 2]
    assert events[-1]["details"]["finish_reason"] == "length"
    error = post(stack, {"inputs": ""}, path="/")
    assert error.status_code == 422 and isinstance(error.json(), dict)  # errors are not wrapped


def test_shard_failure_is_424(stack):
    stack.fake.script.fail_after = 1
    response = post(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 5}})
    assert response.status_code == 424
    assert response.json() == {"error": "Request failed during generation: Server error: scripted failure",
                               "error_type": "generation"}


def test_stream_ending_without_final_message(stack):
    stack.fake.script.end_early_after = 2
    response = post(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 5}})
    assert response.status_code == 500
    assert response.json() == {"error": "Incomplete generation", "error_type": "incomplete_generation"}
    events = parse_sse(post(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 5}},
                            path="/generate_stream").content)
    assert [event.get("index") for event in events] == [1, 2, None]
    assert events[-1] == {"error": "Incomplete generation stream", "error_type": "incomplete_generation_stream"}


def test_tokenize_uses_byte_offsets(stack):
    response = post(stack, {"inputs": "héllo world"}, path="/tokenize")
    assert response.json() == [
        {"id": VOCAB["<s>"], "text": "", "start": 0, "stop": 0},
        {"id": VOCAB["[UNK]"], "text": "héllo", "start": 0, "stop": 6},
        {"id": VOCAB["world"], "text": "world", "start": 7, "stop": 12},
    ]


def test_health_routes(stack):
    for path in ("/health", "/", "/ping"):
        response = requests.get(stack.url + path, timeout=5)
        assert response.status_code == 200 and response.content == b""
    stack.fake.healthy = False
    assert wait_until(lambda: requests.get(stack.url + "/health", timeout=5).status_code == 503)
    response = requests.get(stack.url + "/", timeout=5)
    assert response.json() == {"error": "unhealthy", "error_type": "healthcheck"}
    failed = post(stack, {"inputs": "hello"})
    assert failed.status_code == 424 and failed.json()["error_type"] == "generation"
    stack.fake.healthy = True
    assert wait_until(lambda: requests.get(stack.url + "/health", timeout=5).status_code == 200)


def test_info(make_stack):
    stack = make_stack(model_id="served/name", max_input_tokens=40, max_concurrent_requests=7,
                       max_grammar_length=500)
    info = requests.get(stack.url + "/info", timeout=5).json()
    expected = {
        "model_id": "served/name", "model_sha": None, "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": 7, "max_best_of": 2, "max_stop_sequences": 4, "max_input_tokens": 40,
        "max_total_tokens": 64, "validation_workers": 2, "max_client_batch_size": 32,
        "router": "sluice-router", "version": "3.3.6", "sluice_version": info["sluice_version"], "sha": None,
        "docker_label": None,
        "model_dtype": "float32", "model_device_type": "cpu", "max_batch_total_tokens": 256,
        # sluice's own, after TGI's: the grammar kinds /generate takes, and --max-grammar-length.
        "grammar_types": ["json", "json_object", "regex", "json_schema"], "max_grammar_length": 500,
    }
    assert info == expected and list(info) == list(expected)
    for kind in info["grammar_types"]:  # each one named is taken
        value = "(yes|no)" if kind == "regex" else {"type": "object"}
        if kind == "json_schema":
            value = {"name": "x", "schema": value}
        body = {"inputs": "hello", "parameters": {"max_new_tokens": 1, "grammar": {"type": kind, "value": value}}}
        assert post(stack, body).status_code == 200
    too_long = {"type": "regex", "value": "a" * 501}
    assert post(stack, {"inputs": "hello", "parameters": {"grammar": too_long}}).status_code == 422


def test_api_key(make_stack):
    stack = make_stack(api_key="s3cret")
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 1}}
    for path in ("/generate", "/generate_stream", "/", "/tokenize"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = post(stack, body, path=path, headers=headers)
            assert response.status_code == 401 and response.json()["error_type"] == "unauthorized"
            assert "Content-Length" in response.headers
    assert post(stack, body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert post(stack, body, headers={"Authorization": "bearer S3CRET"}).status_code == 200  # as TGI
    for path in ("/health", "/info", "/metrics", "/ping"):
        assert requests.get(stack.url + path, timeout=5).status_code == 200


def test_payload_limit(make_stack):
    stack = make_stack(payload_limit=1000)
    big = {"inputs": "hello " * 300}
    response = post(stack, big)
    assert response.status_code == 413 and "Content-Length" in response.headers
    assert response.json() == {"error": "Failed to buffer the request body: length limit exceeded",
                               "error_type": "validation"}
    chunked = requests.post(stack.url + "/generate", data=iter([b'{"inputs": "', b"x" * 2000, b'"}']),
                            headers={"Content-Type": "application/json"}, timeout=10)
    assert chunked.status_code == 413
    assert post(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 1}}).status_code == 200


def test_metrics_names(stack):
    post(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 3}})
    post(stack, {"inputs": ""})
    text = requests.get(stack.url + "/metrics", timeout=5).text
    assert "# TYPE tgi_request_count counter\ntgi_request_count 2\n" in text
    assert "tgi_request_success 1\n" in text and 'tgi_request_failure{err="validation"} 1\n' in text
    for name in ("tgi_request_duration", "tgi_request_validation_duration", "tgi_request_queue_duration",
                 "tgi_request_inference_duration", "tgi_request_mean_time_per_token_duration",
                 "tgi_request_generated_tokens", "tgi_request_input_length", "tgi_request_max_new_tokens",
                 "sluice_time_to_first_token_seconds"):
        assert f"# TYPE {name} histogram" in text and f"{name}_count 1.0" in text, name
    assert "sluice_inter_token_latency_seconds_count 2.0" in text  # one per gap between 3 tokens
    assert "tgi_queue_size 0.0" in text and "sluice_requests_in_flight 0.0" in text
    assert "tgi_request_generated_tokens_sum 3.0" in text
    assert "# TYPE sluice_requests_cancelled_total counter" in text
    assert "# TYPE sluice_requests_rejected_total counter" in text
    assert "sluice_shard_healthy{shard=" in text
