"""A shard that hangs is taken out of rotation, and put back when it answers again: a shard
process frozen with SIGSTOP (its streams get an error event within 2 s, new requests go
to the other shard), and a shard whose Health alone stops answering. A shard killed
outright is tests/e2e/test_replicas.py."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from tests.conftest import Process, free_port
from tests.fakes import FakeShard
from tests.reliability.conftest import metrics, request
from tests.reliability.test_drain import Stream, in_thread
from tests.router.support import wait_until


def shard_gauge(url: str, name: str, uri: str) -> float:
    return metrics(url)[f'{name}{{shard="{uri}"}}']


def healthy(url: str, uri: str) -> bool:
    return shard_gauge(url, "sluice_shard_healthy", uri) == 1.0


def timed_rest(stream: Stream) -> tuple[list, float]:
    events = stream.rest()
    return events, time.monotonic()


def generate_quickly(url: str, count: int) -> None:
    for _ in range(count):
        started = time.monotonic()
        status, _, body = request(url, "POST", "/generate", {"inputs": "hello", "parameters": {"max_new_tokens": 3}})
        assert status == 200 and time.monotonic() - started < 1.0, body


def streams_on_both(url: str, uris: list[str]) -> list[Stream]:
    """Two streams at once: the pool's least-outstanding choice puts one on each shard."""
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 40}}
    streams = [Stream(url, "/generate_stream", body) for _ in uris]
    assert all(shard_gauge(url, "sluice_shard_outstanding_requests", uri) == 1 for uri in uris)
    return streams


@pytest.fixture
def separate_shard(tokenizer_dir, tmp_path):
    """The scripted shard in a process of its own, to be frozen."""
    port = free_port()
    process = Process(["-m", "tests.reliability.fake_shard_server", "--port", str(port), "--tokenizer-dir",
                       tokenizer_dir, "--token-delay-s", "0.05"], tmp_path / "separate-shard.log")
    process.wait_for(lambda: "SHARD READY" in process.output(), 30, "shard process")
    yield process, f"127.0.0.1:{port}"
    os.kill(process.popen.pid, signal.SIGCONT)
    process.stop()


def test_a_frozen_shard_process_leaves_rotation_and_rejoins(start_router, separate_shard):
    process, frozen_uri = separate_shard
    router = start_router(other_uris=(frozen_uri,))
    router.fake.script.token_delay_s = 0.05
    uris = [router.shards[0].uri, frozen_uri]
    assert wait_until(lambda: all(healthy(router.url, uri) for uri in uris), timeout_s=5)
    streams = streams_on_both(router.url, uris)
    for stream in streams:
        assert stream.next_event()["index"] == 1
    os.kill(process.popen.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    readers = [in_thread(timed_rest, stream) for stream in streams]
    for thread, _ in readers:
        thread.join(20)
    ends = sorted((result[0] for _, result in readers), key=lambda end: "error" in end[0][-1])
    (live_events, _), (frozen_events, errored_at) = ends
    assert live_events[-1]["generated_text"] is not None  # the other shard's stream is untouched
    assert frozen_events[-1]["error_type"] == "generation" and errored_at - frozen_at < 2.0
    assert wait_until(lambda: not healthy(router.url, frozen_uri), timeout_s=3)
    served_before = len(router.fake.requests)
    generate_quickly(router.url, 6)
    assert len(router.fake.requests) == served_before + 6
    os.kill(process.popen.pid, signal.SIGCONT)
    assert wait_until(lambda: healthy(router.url, frozen_uri), timeout_s=10, interval_s=0.1)
    for stream in streams_on_both(router.url, uris):
        assert stream.rest()[-1]["generated_text"] is not None


class HealthThatHangs(FakeShard):
    """Generates as usual, but Health can be made to never answer."""

    hang = False

    async def Health(self, request, context):
        while self.hang:
            await asyncio.sleep(0.01)
        return await super().Health(request, context)


def test_a_shard_whose_health_check_hangs_leaves_rotation(start_router, tokenizer_dir):
    fakes = [FakeShard(tokenizer_dir), HealthThatHangs(tokenizer_dir)]
    router = start_router(fakes=fakes)
    uris = [shard.uri for shard in router.shards]
    fakes[1].hang = True
    assert wait_until(lambda: not healthy(router.url, uris[1]), timeout_s=3)
    assert request(router.url, "GET", "/health")[0] == 200  # one shard is enough
    generate_quickly(router.url, 6)
    assert [len(fake.requests) for fake in fakes] == [6, 0]
    fakes[1].hang = False
    assert wait_until(lambda: healthy(router.url, uris[1]), timeout_s=3)
    for fake in fakes:
        fake.script.token_delay_s = 0.02
    for stream in streams_on_both(router.url, uris):
        assert stream.rest()[-1]["generated_text"] is not None
    assert [len(fake.requests) for fake in fakes] == [7, 1]


def test_with_no_shard_in_rotation_requests_fail_at_once(start_router, tokenizer_dir):
    fake = HealthThatHangs(tokenizer_dir)
    router = start_router(fakes=[fake])
    fake.hang = True
    assert wait_until(lambda: request(router.url, "GET", "/health")[0] == 503, timeout_s=3)
    started = time.monotonic()
    status, _, body = request(router.url, "POST", "/generate", {"inputs": "hello"})
    assert status == 424 and time.monotonic() - started < 0.5
    assert json.loads(body) == {"error": "Request failed during generation: no healthy shard is available",
                                "error_type": "generation"}
    fake.hang = False
    assert wait_until(lambda: request(router.url, "GET", "/health")[0] == 200, timeout_s=3)
    generate_quickly(router.url, 1)
