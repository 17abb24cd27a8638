"""Deadlines through the real stack (launcher, router, a real shard with one slot): a
stream cut at its deadline ends with its own event and frees the slot at once; a request
waiting behind it past its queue timeout gets a 429; both are counted."""
from __future__ import annotations

import threading

from tests.reliability.real_stack import RealStack, sse_events

# Random weights in SmolLM2's shape never stop early: 400 tokens outlast every deadline below.
RUNS_LONG = {"max_new_tokens": 400, "ignore_eos_token": True}


def stream_in_background(stack: RealStack, headers: dict, first_event: threading.Event, out: list) -> threading.Thread:
    def run() -> None:
        conn = stack.connection(timeout_s=120)
        conn.request("POST", "/generate_stream", b'{"inputs": "Once upon a time", "parameters": '
                     b'{"max_new_tokens": 400, "ignore_eos_token": true}}',
                     {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        body = b""
        while line := response.readline():
            body += line
            first_event.set()
        out.append((response.status, body))
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_deadline_frees_the_slot_and_a_queue_timeout_refuses_the_waiting(start_stack, default_model_dir):
    stack = start_stack("--model-id", str(default_model_dir), "--load-format", "dummy", "--dtype", "float32",
                        "--num-threads", "1", "--max-batch-size", "1", "--max-total-tokens", "512",
                        "--max-batch-total-tokens", "2048")   # the router admits two; one slot runs
    first_event, streamed = threading.Event(), []
    thread = stream_in_background(stack, {"X-Request-Timeout": "3"}, first_event, streamed)
    assert first_event.wait(60)
    # The only slot is taken: this one waits in the shard's queue until its own timeout.
    status, headers, body = stack.post("/generate", {"inputs": "Hello", "parameters": RUNS_LONG},
                                       {"X-Queue-Timeout": "0.5"})
    assert status == 429 and headers["Retry-After"] == "1", body
    assert b'"error_type":"queue_timeout"' in body
    thread.join(60)
    status, body = streamed[0]
    events = sse_events(body)
    assert status == 200 and events[-1]["error_type"] == "deadline_exceeded", events[-3:]
    assert 1 <= len(events) - 1 < 400 and all(event["generated_text"] is None for event in events[:-1])
    # The slot is free at once: a request that may wait 1 s for it starts (had the cut
    # stream kept generating, it would hold the slot for hundreds of tokens more).
    status, _, body = stack.post("/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 3}},
                                 {"X-Queue-Timeout": "1"})
    assert status == 200, body
    metrics = stack.metrics()
    assert metrics['sluice_request_deadlines_total{phase="queue"}'] == 1
    assert metrics['sluice_request_deadlines_total{phase="total"}'] == 1
    assert metrics['sluice_requests_rejected_total{reason="queue_timeout"}'] == 1
