"""Per-request deadlines against scripted shards: the headers and TGI's parameters, their
precedence and the server's cap, the distinct outcomes (429 queue_timeout before any
header, deadline_exceeded as a stream's last event or a 504), the cancelled shard call and
the metrics. tests/reliability/test_deadlines.py runs the same on a real shard."""

from __future__ import annotations

import pytest
import requests

from tests.router.support import parse_sse, wait_until

LONG = {"inputs": "hello", "parameters": {"max_new_tokens": 50}}   # 2.5 s at 50 ms a token


def post(stack, path: str, body: dict, headers: dict | None = None, stream: bool = False):
    return requests.post(stack.url + path, json=body, headers=headers or {}, timeout=10, stream=stream)


def samples(stack) -> dict[str, float]:
    text = requests.get(stack.url + "/metrics", timeout=5).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_a_stream_past_its_deadline_ends_with_its_own_event_and_cancels_the_call(stack):
    stack.fake.script.token_delay_s = 0.05
    response = post(stack, "/generate_stream", LONG, {"X-Request-Timeout": "0.5"})
    assert response.status_code == 200
    events = parse_sse(response.content)
    *tokens, last = events
    assert 3 <= len(tokens) < 50 and all(event["generated_text"] is None for event in tokens)
    assert last == {"error": f"Deadline exceeded: the request's 0.5 s deadline passed after {len(tokens)} "
                             "generated tokens", "error_type": "deadline_exceeded"}
    assert wait_until(lambda: stack.fake.num_active == 0 and len(stack.fake.cancelled) == 1, 2.0)
    metrics = samples(stack)
    assert metrics['sluice_request_deadlines_total{phase="total"}'] == 1
    assert metrics['tgi_request_failure{err="deadline_exceeded"}'] == 1


def test_a_whole_answer_past_its_deadline_is_a_504_on_each_dialect(stack):
    stack.fake.script.token_delay_s = 0.05
    response = post(stack, "/generate", {**LONG, "parameters": {"max_new_tokens": 50, "request_timeout_s": 0.3}})
    assert response.status_code == 504 and response.json()["error_type"] == "deadline_exceeded"
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    response = post(stack, "/v1/chat/completions", chat, {"X-Request-Timeout": "0.3"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "deadline_exceeded"
    chunks = parse_sse(post(stack, "/v1/chat/completions", {**chat, "stream": True},
                            {"X-Request-Timeout": "0.3"}).content)
    assert chunks[-1]["error"]["type"] == "deadline_exceeded" and "choices" not in chunks[-1]


def test_no_first_token_within_the_queue_timeout_is_a_429_before_any_header(stack):
    stack.fake.script.block = True
    for path in ("/generate", "/generate_stream"):
        response = post(stack, path, LONG, {"X-Queue-Timeout": "0.3"})
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json() == {"error": "Queue timeout: generation did not start within 0.3 s",
                                   "error_type": "queue_timeout"}
    assert wait_until(lambda: stack.fake.num_active == 0, 2.0)
    metrics = samples(stack)
    assert metrics['sluice_request_deadlines_total{phase="queue"}'] == 2
    assert metrics['sluice_requests_rejected_total{reason="queue_timeout"}'] == 2
    stack.fake.script.block = False
    # Once it starts, the queue timeout no longer applies.
    stack.fake.script.token_delay_s = 0.05
    response = post(stack, "/generate_stream", {"inputs": "hi", "parameters": {"max_new_tokens": 10, "details": True}},
                    {"X-Queue-Timeout": "0.2"})
    assert parse_sse(response.content)[-1]["details"]["finish_reason"] == "length"


def test_a_queue_deadline_holds_the_headers_of_every_streaming_route(stack):
    """The headers wait for the first event; then the stream is as usual."""
    headers = {"X-Queue-Timeout": "5"}
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    assert post(stack, "/v1/chat/completions", chat, headers).content.endswith(b"data: [DONE]\n\n")
    body = post(stack, "/v1/responses", {"model": "m", "input": "hi", "max_output_tokens": 3, "stream": True},
                headers).content
    assert body.startswith(b"event: response.created\n") and b"event: response.incomplete\n" in body


def test_the_parameter_wins_over_the_header_and_the_flag_caps_both(make_stack):
    stack = make_stack(max_request_timeout_s=0.4, request_timeout_s=30.0)
    stack.fake.script.token_delay_s = 0.05
    # The header asks 100 s, the cap is 0.4 s.
    assert post(stack, "/generate", LONG, {"X-Request-Timeout": "100"}).status_code == 504
    # The parameter (0.2 s) wins over the header (100 s); its message names its own value.
    body = {"inputs": "hi", "parameters": {"max_new_tokens": 50, "request_timeout_s": 0.2}}
    assert "0.2 s deadline" in post(stack, "/generate", body, {"X-Request-Timeout": "100"}).json()["error"]
    # A short answer within its deadline is untouched.
    short = post(stack, "/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 2}})
    assert short.status_code == 200 and short.json()["generated_text"]


@pytest.mark.parametrize("headers, body, message", [
    ({"X-Request-Timeout": "soon"}, {}, "`X-Request-Timeout` must be a number of seconds"),
    ({"X-Queue-Timeout": "-1"}, {}, "`X-Queue-Timeout` must be a number of seconds"),
    ({}, {"request_timeout_s": 0}, "`parameters.request_timeout_s` must be a number of seconds"),
    ({}, {"queue_timeout_s": "1"}, "parameters.queue_timeout_s: invalid type: string"),
])
def test_a_bad_timeout_is_a_422_in_the_routes_shape(stack, headers, body, message):
    response = post(stack, "/generate", {"inputs": "hi", "parameters": body}, headers)
    assert response.status_code == 422 and message in response.json()["error"]
    assert response.json()["error_type"] == "validation"
    if headers:
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        response = post(stack, "/v1/chat/completions", chat, headers)
        assert response.status_code == 422 and message in response.json()["error"]["message"]
