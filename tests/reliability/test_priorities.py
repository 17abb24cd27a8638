"""Priorities through the real stack: with the shard's one slot busy, a low request and
then a high one wait; when the slot frees (its client hangs up), the high one is admitted
first."""
from __future__ import annotations

import threading
import time

from tests.reliability.real_stack import RealStack


def first_token_at(stack: RealStack, priority: str, max_new_tokens: int, out: dict, key: str,
                   hang_up: threading.Event | None = None) -> threading.Thread:
    def run() -> None:
        conn = stack.connection(timeout_s=120)
        body = ('{"inputs": "Once upon a time", "parameters": {"max_new_tokens": %d, "ignore_eos_token": true}}'
                % max_new_tokens)
        conn.request("POST", "/generate_stream", body.encode(),
                     {"Content-Type": "application/json", "X-Priority": priority})
        response = conn.getresponse()
        while line := response.readline():
            if line.startswith(b"data:") and key not in out:
                out[key] = time.monotonic()
            if hang_up is not None and hang_up.is_set():
                break
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def waiting_on_shard(stack: RealStack) -> float:
    return sum(value for name, value in stack.metrics().items() if name.startswith("sluice_shard_waiting_requests"))


def test_a_high_request_is_admitted_before_an_older_low_one(start_stack, default_model_dir):
    # Aging far beyond the test's length: only the classes decide the order.
    stack = start_stack("--model-id", str(default_model_dir), "--load-format", "dummy", "--dtype", "float32",
                        "--num-threads", "1", "--max-batch-size", "1", "--max-total-tokens", "512",
                        "--max-batch-total-tokens", "4096", "--priority-aging-s", "600",
                        "--health-check-interval-s", "0.1")
    starts: dict[str, float] = {}
    hang_up = threading.Event()
    running = first_token_at(stack, "normal", 400, starts, "running", hang_up)
    deadline = time.monotonic() + 60
    while "running" not in starts and time.monotonic() < deadline:
        time.sleep(0.02)
    low = first_token_at(stack, "low", 3, starts, "low")
    # The low one is in the shard's queue before the high one is sent.
    while waiting_on_shard(stack) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    high = first_token_at(stack, "high", 3, starts, "high")
    while waiting_on_shard(stack) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    hang_up.set()   # the slot frees: one of the two waiting joins
    for thread in (running, low, high):
        thread.join(120)
    assert set(starts) == {"running", "low", "high"}, starts
    assert starts["high"] < starts["low"], starts
