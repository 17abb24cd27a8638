"""Server-sent events: exact framing, keep-alive, errors after the first byte, client
disconnects (the shard must see the cancel) and a shard dying mid-stream."""

from __future__ import annotations

import json
import time

import requests

from tests.fakes import output_text
from tests.router.support import RawHttp, parse_sse, wait_until

STREAM_BODY = {"inputs": "hello world", "parameters": {"max_new_tokens": 4, "details": True}}


def stream(stack, body=STREAM_BODY, path="/generate_stream") -> requests.Response:
    return requests.post(stack.url + path, json=body, stream=True, timeout=10)


def call_ids(stack) -> list[str]:
    """The ids of the shard calls made so far (the router's own, one per call)."""
    return [request.request_id for request in stack.fake.requests]


def metric(stack, line_start: str) -> str | None:
    text = requests.get(stack.url + "/metrics", timeout=5).text
    return next((line for line in text.splitlines() if line.startswith(line_start)), None)


def test_framing_is_exact(stack):
    response = stream(stack)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.headers["x-compute-characters"] == "11" and "Content-Length" not in response.headers
    assert len(response.headers["x-request-id"]) == 32
    body = response.raw.read()
    texts = [" the", " cat", " sat", " on"]
    expected = b""
    for index, text in enumerate(texts, start=1):
        last = index == len(texts)
        token = {"id": json.loads(body.split(b"\n\n")[index - 1][6:])["token"]["id"], "text": text,
                 "logprob": round(-0.1 - 0.001 * (index - 1), 3), "special": False}
        event = {"index": index, "token": token,
                 "generated_text": output_text(4) if last else None,
                 "details": {"finish_reason": "length", "generated_tokens": 4, "seed": None, "input_length": 3}
                 if last else None}
        expected += b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
    assert body == expected
    assert b"[DONE]" not in body


def test_events_arrive_one_by_one(stack):
    stack.fake.script.token_delay_s = 0.05
    response = stream(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 5}})
    arrivals = []
    for chunk in response.iter_content(chunk_size=None):
        arrivals.append((time.monotonic(), chunk))
    assert [chunk.count(b"data: ") for _, chunk in arrivals] == [1] * 5  # one flush per event
    gaps = [later[0] - earlier[0] for earlier, later in zip(arrivals, arrivals[1:])]
    assert min(gaps) > 0.02, gaps
    events = parse_sse(b"".join(chunk for _, chunk in arrivals))
    assert [event["index"] for event in events] == [1, 2, 3, 4, 5]
    assert all(event["generated_text"] is None and event["details"] is None for event in events[:-1])
    assert events[-1]["generated_text"] == output_text(5) and events[-1]["details"] is None
    assert all("top_tokens" not in event for event in events)


def test_top_tokens_and_full_text_in_stream(stack):
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 2, "top_n_tokens": 3, "return_full_text": True}}
    events = parse_sse(stream(stack, body).raw.read())
    assert list(events[0]) == ["index", "token", "top_tokens", "generated_text", "details"]
    assert len(events[0]["top_tokens"]) == 3
    assert events[-1]["generated_text"] == "hello" + output_text(2)


def test_keep_alive_while_queued(make_stack):
    stack = make_stack(keep_alive_interval_s=0.05)
    stack.fake.script.block = True
    response = stream(stack)
    time.sleep(0.3)
    stack.fake.script.block = False
    body = response.raw.read()
    assert body.startswith(b":\n\n") and body.count(b":\n\n") >= 3
    events = parse_sse(body)  # comments are skipped, the events are intact
    assert [event["index"] for event in events] == [1, 2, 3, 4]


def test_error_after_first_byte_is_an_event(stack):
    stack.fake.script.fail_after = 2
    response = stream(stack, {"inputs": "hello", "parameters": {"max_new_tokens": 10}})
    assert response.status_code == 200
    events = parse_sse(response.raw.read())
    assert [event.get("index") for event in events[:2]] == [1, 2]
    assert events[2] == {"error": "Request failed during generation: Server error: scripted failure",
                         "error_type": "generation"}
    assert len(events) == 3
    assert metric(stack, "tgi_request_failure{") == 'tgi_request_failure{err="generation"} 1'


def test_disconnect_after_three_events_cancels_the_shard_call(stack):
    stack.fake.script.token_delay_s = 0.02
    client = RawHttp(stack.url, "/generate_stream", {"inputs": "hello", "parameters": {"max_new_tokens": 60}},
                     headers={"x-request-id": "leaver"})
    client.read_until(b"data: ", count=3)
    assert stack.state.admission.num_in_flight == 1
    client.close()
    closed_at = time.monotonic()
    assert wait_until(lambda: stack.fake.cancelled == call_ids(stack), timeout_s=1.0)
    assert wait_until(lambda: metric(stack, "sluice_requests_in_flight") == "sluice_requests_in_flight 0.0",
                      timeout_s=1.0 - (time.monotonic() - closed_at) + 0.05)
    assert len(stack.fake.requests) == 1 and stack.fake.num_active == 0
    assert metric(stack, "sluice_requests_cancelled_total") == "sluice_requests_cancelled_total 1.0"
    assert metric(stack, "tgi_request_failure{") == 'tgi_request_failure{err="dropped"} 1'
    assert stack.state.pool.shards[0].num_outstanding == 0


def test_disconnect_while_queued(stack):
    stack.fake.script.block = True
    client = RawHttp(stack.url, "/", {"inputs": "hello", "stream": True}, headers={"x-request-id": "early"})
    assert client.read_headers().startswith("HTTP/1.1 200")  # headers go out before the first token
    assert wait_until(lambda: stack.fake.num_active == 1)
    client.close()
    assert wait_until(lambda: stack.fake.cancelled == call_ids(stack), timeout_s=1.0)
    assert wait_until(lambda: stack.state.admission.num_in_flight == 0, timeout_s=1.0)


def test_disconnect_right_after_headers(stack):
    """However early the client leaves, nothing stays open: the shard call is either
    cancelled or never made, and the permit comes back."""
    for index in range(5):
        client = RawHttp(stack.url, "/generate_stream", {"inputs": "hello", "parameters": {"max_new_tokens": 60}},
                         headers={"x-request-id": f"gone-{index}"})
        assert client.read_headers().startswith("HTTP/1.1 200")
        client.close()
    assert wait_until(lambda: stack.state.admission.num_in_flight == 0, timeout_s=1.0)
    assert wait_until(lambda: stack.fake.num_active == 0, timeout_s=1.0)
    assert {request.request_id for request in stack.fake.requests} <= set(stack.fake.cancelled)


def test_disconnect_during_non_streaming_request(stack):
    stack.fake.script.token_delay_s = 0.05
    client = RawHttp(stack.url, "/generate", {"inputs": "hello", "parameters": {"max_new_tokens": 60}},
                     headers={"x-request-id": "impatient"})
    assert wait_until(lambda: stack.fake.num_active == 1)
    client.close()
    assert wait_until(lambda: stack.fake.cancelled == call_ids(stack), timeout_s=1.0)
    assert wait_until(lambda: stack.state.admission.num_in_flight == 0, timeout_s=1.0)


def test_requests_spread_over_shards(make_stack):
    stack = make_stack(num_shards=2)
    for shard in stack.shards:
        shard.fake.script.block = True
    clients = [RawHttp(stack.url, "/generate_stream", {"inputs": "hello"}) for _ in range(2)]
    assert wait_until(lambda: all(shard.fake.num_active == 1 for shard in stack.shards))
    for client in clients:
        client.close()


def test_shard_dying_mid_stream(make_stack):
    stack = make_stack(num_shards=2)
    for shard in stack.shards:
        shard.fake.script.token_delay_s = 0.05
    client = RawHttp(stack.url, "/generate_stream", {"inputs": "hello", "parameters": {"max_new_tokens": 60}})
    client.read_until(b"data: ", count=3)
    dying = next(index for index, shard in enumerate(stack.shards) if shard.fake.num_active == 1)
    stopped_at = time.monotonic()
    stack.stop_shard(dying)
    body = client.read_until(b'"error_type"')
    assert time.monotonic() - stopped_at < 2.0
    last_event = json.loads(body.rstrip(b"\r\n0").split(b"data: ")[-1].split(b"\n\n")[0])
    assert last_event["error_type"] == "generation"
    assert last_event["error"].startswith("Request failed during generation: ")
    client.close()
    survivor = stack.shards[1 - dying].fake
    for _ in range(3):
        response = requests.post(stack.url + "/generate", json={"inputs": "hello", "parameters": {"max_new_tokens": 2}},
                                 timeout=5)
        assert response.status_code == 200, response.text
    assert len(survivor.requests) == 3
    assert requests.get(stack.url + "/health", timeout=5).status_code == 200
