"""Busy is not dead (issue 12.8), against a real router and a real shard process: a shard
process frozen with SIGSTOP fails its streams within 2 s. A shard that is slow but alive
keeps its streams, which run to their full length, and its place in rotation: one whose
cores other processes keep saturated, and one starved outright for 1.2 s at a time, as a
loaded host's processes sometimes are (see README, "Shards on other machines"). So does
a router starved for longer than a shard may stay silent."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.reliability.real_stack import sse_events
from tests.reliability.test_drain import Stream, in_thread
from tests.router.support import wait_until

# Busy loops started from this session, so they share the stack's scheduling group (Linux
# autogroups) instead of getting a share of their own beside it. Each ends itself after
# LOAD_S, even if this test dies first.
NUM_BUSY, LOAD_S = 16, 12.0
NUM_STREAMS, MAX_NEW_TOKENS = 4, 200
# Longer than one HTTP/2 ping's 1 s, shorter than the 1.6 s of silence that means dead.
# Up to 8 stalls; 400 tokens of the tiny model may end after fewer on a fast CPU, and one
# stall already killed streams before the fix, so 4 that came mid-stream are the proof.
STALL_S, NUM_STALLS, MIN_SHARD_STALLS = 1.2, 8, 4
ROUTER_STALL_S = 1.8
BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass"


@contextmanager
def saturated_cores(seconds: float) -> Iterator[None]:
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)]) for _ in range(NUM_BUSY)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def shard_healthy(stack) -> dict[str, float]:
    return {name: value for name, value in stack.metrics().items() if name.startswith("sluice_shard_healthy{")}


def sample_until(stop: threading.Event, sample, samples: list) -> None:
    while not stop.wait(0.2):
        samples.append(sample())


def stream_body(max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    return {"inputs": "hello", "parameters": {"max_new_tokens": max_new_tokens, "details": True}}


def assert_complete(streams: list, max_new_tokens: int = MAX_NEW_TOKENS) -> None:
    for thread, result in streams:
        thread.join(300)
        [(status, _, body)] = result
        events = sse_events(body)
        assert status == 200 and "error" not in events[-1], events[-1]
        assert [event["index"] for event in events] == list(range(1, max_new_tokens + 1))
        assert events[-1]["details"]["generated_tokens"] == max_new_tokens


def assert_stayed_in_rotation(stack, samples: list[dict[str, float]]) -> None:
    assert samples and all(set(sample.values()) == {1.0} for sample in samples), \
        [sample for sample in samples if set(sample.values()) != {1.0}]
    assert "out of rotation" not in stack.launcher.output()  # not even between two samples


def test_a_frozen_shard_process_fails_its_streams_within_2s(start_stack, tiny_model):
    stack = start_stack("--health-check-interval-s", "0.2", model_dir=tiny_model)
    (shard,) = stack.processes()["shard"]
    stream = Stream(stack.url, "/generate_stream", {"inputs": "hello", "parameters": {"max_new_tokens": 400}})
    try:
        assert stream.next_event()["index"] == 1
        shard.suspend()
        frozen_at = time.monotonic()
        events = stream.rest()
        errored_at = time.monotonic()
    finally:
        shard.resume()
    assert events[-1]["error_type"] == "generation", events[-1]
    assert errored_at - frozen_at < 2.0
    # Thawed, it answers again and rejoins.
    assert wait_until(lambda: set(shard_healthy(stack).values()) == {1.0}, timeout_s=10, interval_s=0.1)
    status, _, body = stack.post("/generate", {"inputs": "hello", "parameters": {"max_new_tokens": 3}})
    assert status == 200, body


def test_a_shard_on_saturated_cores_keeps_its_streams_and_its_place(start_stack, tiny_model):
    stack = start_stack(model_dir=tiny_model)
    assert set(shard_healthy(stack).values()) == {1.0}
    stop, samples = threading.Event(), []
    sampler = threading.Thread(target=sample_until, args=(stop, lambda: shard_healthy(stack), samples))
    with saturated_cores(LOAD_S):
        streams = [in_thread(stack.post, "/generate_stream", stream_body(), None, 300)
                   for _ in range(NUM_STREAMS)]
        sampler.start()
        time.sleep(LOAD_S)
    assert_complete(streams)
    stop.set()
    sampler.join()
    assert_stayed_in_rotation(stack, samples)


def stall_mid_stream(stack, process, stall_s: float, num_stalls: int, min_stalls: int | None = None) -> None:
    """Stop `process` for `stall_s` at a time while 4 long streams run; they must all end
    in full, and the shard stay in rotation. At least `min_stalls` stalls must come while
    the streams run (a stopped router does not stop the shard, so its streams may end first)."""
    stop, samples = threading.Event(), []
    sampler = threading.Thread(target=sample_until, args=(stop, lambda: shard_healthy(stack), samples))
    streams = [in_thread(stack.post, "/generate_stream", stream_body(400), None, 300)
               for _ in range(NUM_STREAMS)]
    sampler.start()
    stalls = 0
    try:
        while stalls < num_stalls and any(thread.is_alive() for thread, _ in streams):
            time.sleep(0.3)  # tokens flow, and with them the router's HTTP/2 pings
            process.suspend()
            time.sleep(stall_s)
            process.resume()
            stalls += 1
    finally:
        process.resume()
    assert_complete(streams, 400)
    assert stalls >= (num_stalls if min_stalls is None else min_stalls)  # stalls came mid-stream
    stop.set()
    sampler.join()
    assert_stayed_in_rotation(stack, samples)


def test_a_shard_starved_for_seconds_at_a_time_keeps_its_streams_and_its_place(start_stack, tiny_model):
    stack = start_stack(model_dir=tiny_model)
    (shard,) = stack.processes()["shard"]
    stall_mid_stream(stack, shard, STALL_S, NUM_STALLS, min_stalls=MIN_SHARD_STALLS)


def test_a_starved_router_judges_no_shard_dead(start_stack, tiny_model):
    """Stopped longer than a shard may stay silent: on waking it must read what came in
    meanwhile before it judges anyone."""
    stack = start_stack(model_dir=tiny_model)
    (router,) = stack.processes()["router"]
    stall_mid_stream(stack, router, ROUTER_STALL_S, 3, min_stalls=1)
