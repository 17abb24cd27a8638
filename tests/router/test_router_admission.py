"""Admission: when max_concurrent_requests are queued or running, every generation
route answers 429 at once, as a plain JSON response with Retry-After and Content-Length."""

from __future__ import annotations

import time

import pytest
import requests

from tests.router.support import RawHttp, wait_until

OVERLOADED = {"error": "Model is overloaded", "error_type": "overloaded"}


def hold(stack, count: int) -> list[RawHttp]:
    """Fill `count` slots with streams the fake shard holds before their first token."""
    stack.fake.script.block = True
    clients = [RawHttp(stack.url, "/generate_stream", {"inputs": "hello", "parameters": {"max_new_tokens": 2}})
               for _ in range(count)]
    assert wait_until(lambda: stack.state.admission.num_in_flight == count and stack.fake.num_active == count)
    return clients


@pytest.mark.parametrize("path, body", [
    ("/generate", {"inputs": "hello"}),
    ("/generate_stream", {"inputs": "hello"}),
    ("/", {"inputs": "hello", "stream": True}),
    ("/", {"inputs": "hello"}),
    # TGI takes the permit before validating, so even an invalid request is told "overloaded".
    ("/generate", {"inputs": "hello", "parameters": {"temperature": 0}}),
])
def test_overload_is_an_immediate_429(make_stack, path, body):
    stack = make_stack(max_concurrent_requests=2)
    clients = hold(stack, 2)
    started = time.monotonic()
    response = requests.post(stack.url + path, json=body, timeout=5)
    assert time.monotonic() - started < 0.5
    assert response.status_code == 429 and response.json() == OVERLOADED
    assert response.headers["Retry-After"] == "1"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert "Transfer-Encoding" not in response.headers
    assert len(stack.fake.requests) == 2
    # The held requests still complete once the shard lets them through.
    stack.fake.script.block = False
    for client in clients:
        raw = client.read_until(b"\r\n0\r\n\r\n")  # the last chunk of a chunked body
        assert raw.startswith(b"HTTP/1.1 200") and b'"generated_text":" the cat"' in raw
        client.close()
    assert wait_until(lambda: stack.state.admission.num_in_flight == 0)


def test_best_of_takes_one_permit_per_sequence(make_stack):
    stack = make_stack(max_concurrent_requests=2)
    clients = hold(stack, 1)
    body = {"inputs": "hello", "parameters": {"best_of": 2, "do_sample": True}}
    response = requests.post(stack.url + "/generate", json=body, timeout=5)
    assert response.status_code == 429 and response.json() == OVERLOADED
    for client in clients:
        client.close()
    assert wait_until(lambda: stack.state.admission.num_in_flight == 0)
    stack.fake.script.block = False
    assert requests.post(stack.url + "/generate", json=body, timeout=5).status_code == 200


def test_slots_free_up_and_metrics_count_rejections(make_stack):
    stack = make_stack(max_concurrent_requests=1)
    clients = hold(stack, 1)
    for _ in range(3):
        assert requests.post(stack.url + "/generate", json={"inputs": "hi"}, timeout=5).status_code == 429
    for client in clients:
        client.close()
    assert wait_until(lambda: stack.state.admission.num_in_flight == 0)
    stack.fake.script.block = False
    assert requests.post(stack.url + "/generate", json={"inputs": "hello"}, timeout=5).status_code == 200
    text = requests.get(stack.url + "/metrics", timeout=5).text
    assert 'sluice_requests_rejected_total{reason="overloaded"} 3.0' in text
    assert 'tgi_request_failure{err="overloaded"} 3' in text
    # /health and /info need no permit; /tokenize does its work under one (issue 12.3).
    clients = hold(stack, 1)
    assert requests.post(stack.url + "/tokenize", json={"inputs": "hi"}, timeout=5).status_code == 429
    assert requests.get(stack.url + "/health", timeout=5).status_code == 200
    for client in clients:
        client.close()
