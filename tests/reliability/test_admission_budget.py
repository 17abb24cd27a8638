"""Admission follows what the shards can take: each call reserves prompt + max_new_tokens of
its shard's KV budget (`max_batch_total_tokens` in the shard's Info), so once the budget is
spoken for, the next request is a 429 at once instead of an admitted request that waits on
the shard where the router cannot see it. Real router, real shard process, the tiny Llama:
requests leave out max_new_tokens, so each reserves the whole context (512 tokens)."""
from __future__ import annotations

import json
import time

import pytest

from tests.reliability.real_stack import running_stack

CONTEXT = 512
NUM_FITTING = 4


@pytest.fixture(scope="module")
def stack(tiny_model, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("admission-budget") / "launcher.log"
    with running_stack(log_path, "--max-total-tokens", str(CONTEXT),
                       "--max-batch-total-tokens", str(NUM_FITTING * CONTEXT), model_dir=tiny_model) as stack:
        yield stack


def gauge(stack, name: str) -> float:
    return next(value for key, value in stack.metrics().items() if key.startswith(name + "{"))


def open_stream(stack, body: dict):
    conn = stack.connection(60)
    conn.request("POST", "/generate_stream", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return conn, response


def test_requests_past_the_kv_budget_are_429_at_once(stack):
    assert gauge(stack, "sluice_shard_max_batch_total_tokens") == NUM_FITTING * CONTEXT
    streams = [open_stream(stack, {"inputs": "The", "parameters": {}}) for _ in range(NUM_FITTING)]
    try:
        for _, response in streams:
            assert response.status == 200
            assert response.readline().startswith(b"data:")  # running: its first token is out
        assert gauge(stack, "sluice_shard_reserved_tokens") == NUM_FITTING * CONTEXT
        for path, body in (("/generate_stream", {"inputs": "The", "parameters": {}}),
                           ("/generate", {"inputs": "The", "parameters": {}}),
                           ("/generate", {"inputs": "The", "parameters": {"max_new_tokens": 5}}),
                           ("/v1/completions", {"prompt": "The", "stream": True})):
            status, headers, raw = stack.post(path, body)
            assert status == 429, (path, raw)
            assert headers["Retry-After"] == "1"
        # Nothing was left waiting on the shard, where the router would not have seen it.
        assert gauge(stack, "sluice_shard_waiting_requests") == 0
        # The shard's own count of its batch reaches the router with the health checks.
        deadline = time.monotonic() + 10
        while gauge(stack, "sluice_shard_running_requests") != NUM_FITTING and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gauge(stack, "sluice_shard_running_requests") == NUM_FITTING
    finally:
        for conn, _ in streams:
            conn.close()
    deadline = time.monotonic() + 30
    while gauge(stack, "sluice_shard_reserved_tokens") and time.monotonic() < deadline:
        time.sleep(0.1)
    status, _, raw = stack.post("/generate", {"inputs": "The", "parameters": {}})
    assert status == 200, raw


def test_a_small_request_still_fits_beside_big_ones(stack):
    """Reservations are per request: short answers fit in what long ones leave."""
    streams = [open_stream(stack, {"inputs": "The", "parameters": {}}) for _ in range(NUM_FITTING - 1)]
    try:
        assert all(response.status == 200 for _, response in streams)
        for _ in range(3):
            status, _, raw = stack.post("/generate", {"inputs": "The", "parameters": {"max_new_tokens": 100}})
            assert status == 200, raw
    finally:
        for conn, _ in streams:
            conn.close()
