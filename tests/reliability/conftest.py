"""A real router process (`python -m router`, so signals, exit codes and its resident memory
are its own) in front of scripted shards on real gRPC servers in this process."""
from __future__ import annotations

import http.client
import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.conftest import Process, free_port, http_ok
from tests.fakes import FakeShard
# The router suite's session fixtures: one event loop for the scripted shards, one tokenizer.
from tests.router.conftest import loop_thread, tokenizer_dir  # noqa: F401
from tests.router.support import ShardServer, start_shard
# Real router + real shard processes (the hardening tests).
from tests.reliability.real_stack import start_stack, tiny_model  # noqa: F401


@dataclass
class RouterProcess:
    process: Process
    url: str
    shards: list[ShardServer]

    @property
    def fake(self) -> FakeShard:
        return self.shards[0].fake

    def terminate(self) -> None:
        self.process.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        return self.process.popen.wait(timeout_s)


@pytest.fixture
def start_router(loop_thread, tokenizer_dir, tmp_path) -> Iterator[Callable[..., RouterProcess]]:
    """start_router(*router flags, num_shards=1, fakes=None, other_uris=()) -> a ready RouterProcess,
    in front of `fakes` (or `num_shards` new ones) in this process, then shards at `other_uris`."""
    started: list[RouterProcess] = []

    def start(*flags: str, num_shards: int = 1, fakes: list[FakeShard] | None = None,
              other_uris: tuple[str, ...] = ()) -> RouterProcess:
        fakes = fakes or [FakeShard(tokenizer_dir) for _ in range(num_shards)]
        shards = [loop_thread.run(start_shard(fake)) for fake in fakes]
        port = free_port()
        uris = [arg for uri in [shard.uri for shard in shards] + list(other_uris) for arg in ("--shard-uri", uri)]
        # A short drain by default, so a failed test's teardown is quick; tests may set their own.
        process = Process(["-m", "router", *uris, "--port", str(port), "--health-check-interval-s", "0.2",
                           "--graceful-shutdown-timeout-s", "2", *flags], tmp_path / f"router-{len(started)}.log")
        router = RouterProcess(process, f"http://127.0.0.1:{port}", shards)
        started.append(router)
        process.wait_for(lambda: http_ok(router.url + "/health"), 30, "router")
        return router

    yield start
    for router in started:
        for shard in router.shards:
            shard.fake.script.block = False
        router.process.stop()
        for shard in router.shards:
            loop_thread.run(shard.server.stop(grace=None))


def request(url: str, method: str, path: str, body: dict | None = None,
            timeout_s: float = 10) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request(method, path, None if body is None else json.dumps(body),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def metrics(url: str) -> dict[str, float]:
    """Every sample on /metrics, by its name with labels."""
    _, _, body = request(url, "GET", "/metrics")
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples
