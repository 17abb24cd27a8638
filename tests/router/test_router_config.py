"""RouterConfig from flags and environment, startup limits, and `python -m router` itself."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
import requests

from protos import shard_pb2_grpc
from router.config import RouterConfig, resolve_limits
from tests.fakes import FakeShard, output_text
from tests.router.support import start_router, start_shard, wait_until

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_defaults_and_flags():
    config = RouterConfig.from_args(["--shard-uri", "127.0.0.1:7001"], environ={})
    assert config.shard_uris == ("127.0.0.1:7001",)
    assert (config.hostname, config.port, config.max_concurrent_requests) == ("127.0.0.1", 8080, 128)
    assert (config.max_best_of, config.max_stop_sequences, config.max_top_n_tokens) == (2, 4, 5)
    assert (config.payload_limit, config.shard_connect_timeout_s, config.api_key) == (2_000_000, 120.0, None)
    assert config.max_input_tokens is None and config.max_total_tokens is None
    config = RouterConfig.from_args(
        ["--shard-uri", "a:1", "--shard-uri", "b:2", "--max_concurrent_requests", "3", "--port", "9000",
         "--api-key", "k", "--max-total-tokens", "100", "--keep-alive-interval-s", "0.5"], environ={})
    assert config.shard_uris == ("a:1", "b:2") and config.max_concurrent_requests == 3
    assert (config.port, config.api_key, config.max_total_tokens, config.keep_alive_interval_s) == \
        (9000, "k", 100, 0.5)


def test_environment_and_precedence():
    environ = {"SHARD_URI": "a:1, b:2", "MAX_CONCURRENT_REQUESTS": "9", "PAYLOAD_LIMIT": "10",
               "API_KEY": "from-env", "COMPUTE_TYPE": "cpu"}
    config = RouterConfig.from_args([], environ=environ)
    assert config.shard_uris == ("a:1", "b:2") and config.max_concurrent_requests == 9
    assert (config.payload_limit, config.api_key, config.compute_type) == (10, "from-env", "cpu")
    config = RouterConfig.from_args(["--shard-uri", "c:3", "--max-concurrent-requests", "4"], environ=environ)
    assert config.shard_uris == ("c:3",) and config.max_concurrent_requests == 4  # the command line wins


@pytest.mark.parametrize("argv, message", [
    ([], "at least one --shard-uri is required"),
    (["--shard-uri", "nohost"], "--shard-uri must be HOST:PORT"),
    (["--shard-uri", "a:1", "--max-concurrent-requests", "0"], "`max_concurrent_requests` must be > 0"),
    (["--shard-uri", "a:1", "--max-input-tokens", "10", "--max-total-tokens", "10"],
     "`max_input_tokens` must be < `max_total_tokens`"),
    (["--shard-uri", "a:1", "--max-top-n-tokens", "-1"], "`max_top_n_tokens` must be >= 0"),
    (["--shard-uri", "a:1", "--port", "70000"], "--port must be in"),
    (["--shard-uri", "a:1", "--otlp-endpoint", "127.0.0.1:4318"], "--otlp-endpoint must be an http"),
    (["--shard-uri", "a:1", "--priority-reserve-share", "1"], "`priority_reserve_share` must be in"),
    (["--shard-uri", "a:1", "--request-timeout-s", "0"], "`request_timeout_s` must be > 0"),
])
def test_invalid_settings_raise_value_error(argv, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        RouterConfig.from_args(argv, environ={})


def test_limits_come_from_the_shard():
    config = RouterConfig(shard_uris=("a:1",))
    limits = resolve_limits(config, 2048)
    assert (limits.max_input_tokens, limits.max_total_tokens) == (2047, 2048)
    limits = resolve_limits(RouterConfig(shard_uris=("a:1",), max_input_tokens=100), 2048)
    assert (limits.max_input_tokens, limits.max_total_tokens) == (100, 2048)
    with pytest.raises(ValueError, match="must be <= the shard's max_total_tokens"):
        resolve_limits(RouterConfig(shard_uris=("a:1",), max_total_tokens=4096), 2048)
    with pytest.raises(ValueError, match="`max_input_tokens` must be < `max_total_tokens`"):
        resolve_limits(RouterConfig(shard_uris=("a:1",), max_input_tokens=3000), 2048)


def test_startup_fails_when_a_shard_never_answers(loop_thread):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead_uri = f"127.0.0.1:{sock.getsockname()[1]}"
    config = RouterConfig(shard_uris=(dead_uri,), shard_connect_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer Info"):
        loop_thread.run(start_router(config))
    assert time.monotonic() - started < 3


def test_startup_waits_for_a_late_shard(loop_thread, tokenizer_dir):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def start_late():
        await asyncio.sleep(0.5)
        server = grpc.aio.server()
        shard_pb2_grpc.add_ShardServicer_to_server(FakeShard(tokenizer_dir), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return server

    future = asyncio.run_coroutine_threadsafe(start_late(), loop_thread.loop)
    config = RouterConfig(shard_uris=(f"127.0.0.1:{port}",), shard_connect_timeout_s=5)
    runner, url = loop_thread.run(start_router(config))
    server = future.result(5)
    try:
        assert requests.get(url + "/health", timeout=5).status_code == 200
    finally:
        loop_thread.run(runner.cleanup())
        loop_thread.run(server.stop(None))


def test_python_dash_m_router(loop_thread, tokenizer_dir):
    shard = loop_thread.run(start_shard(FakeShard(tokenizer_dir)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "router", "--shard-uri", shard.uri, "--port", str(port), "--hostname", "127.0.0.1"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _healthy(url), timeout_s=20, interval_s=0.1), process.stdout.read1().decode()
        response = requests.post(url + "/generate", json={"inputs": "hello", "parameters": {"max_new_tokens": 2}})
        assert response.json() == {"generated_text": output_text(2)}
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        loop_thread.run(shard.server.stop(None))


def test_python_dash_m_router_rejects_bad_flags():
    result = subprocess.run([sys.executable, "-m", "router", "--max-best-of", "0", "--shard-uri", "a:1"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "Argument validation error: `max_best_of` must be > 0" in result.stderr


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False
