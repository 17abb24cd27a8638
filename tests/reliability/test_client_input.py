"""Bad client input is a 4xx in the route's error shape, counted as a failure, sent before
any header, and it leaves the connection (and every other request) as it was. Real router,
real shard process, the tiny Llama."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from tests.reliability.real_stack import RealStack, running_stack, sse_events

KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
SURROGATE_STOP = '{"stop": ["\\ud800"]}'


@pytest.fixture(scope="module")
def stack(tiny_model, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("client-input") / "launcher.log"
    with running_stack(log_path, "--api-key", KEY, "--max-concurrent-requests", "8",
                       model_dir=tiny_model) as stack:
        yield stack


def exchange(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body, {**AUTH, **(headers or {})})
    response = conn.getresponse()
    return response.status, response.read()


# (path, body with a lone surrogate in its stop string, openai error shape)
SURROGATE_BODIES = [
    ("/generate", '{"inputs": "The quick", "parameters": %s}' % SURROGATE_STOP, False),
    ("/generate_stream", '{"inputs": "The quick", "parameters": %s}' % SURROGATE_STOP, False),
    ("/", '{"inputs": "The quick", "stream": true, "parameters": %s}' % SURROGATE_STOP, False),
    ("/v1/completions", '{"prompt": "The quick", "stream": true, "stop": ["\\ud800"]}', True),
    ("/v1/completions", '{"prompt": "The quick", "stop": ["\\ud800"]}', True),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "stream": true, '
                             '"stop": ["\\ud800"]}', True),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "\\udfff"}]}', True),
]


@pytest.mark.parametrize(("path", "body", "openai"), SURROGATE_BODIES)
def test_a_string_that_is_not_utf8_is_a_422_and_the_connection_stays_framed(stack, path, body, openai):
    conn = stack.connection()
    try:
        status, raw = exchange(conn, "POST", path, body.encode())
        assert status == 422, raw
        error = json.loads(raw)
        message = error["error"]["message"] if openai else error["error"]
        assert "UTF-8" in message and error["error_type"] == "validation"
        # The same keep-alive connection carries the next request as if nothing happened.
        status, raw = exchange(conn, "POST", "/generate_stream",
                               b'{"inputs": "The quick", "parameters": {"max_new_tokens": 3}}')
        assert status == 200 and len(sse_events(raw)) == 3
        status, raw = exchange(conn, "GET", "/health", None)
        assert status == 200
    finally:
        conn.close()


def raw_exchange(stack: RealStack, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    host, port = stack.host_port
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head_part, _, payload = received.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), payload


def failures(stack: RealStack) -> tuple[float, float]:
    samples = stack.metrics()
    return (samples.get("tgi_request_count", 0.0),
            sum(value for name, value in samples.items() if name.startswith("tgi_request_failure")))


def test_a_non_utf8_authorization_header_is_a_401(stack):
    head = (b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer \xff\xfe\xe9\r\n")
    status, payload = raw_exchange(stack, head, b'{"inputs": "The quick"}')
    assert status == 401
    assert json.loads(payload)["error_type"] == "unauthorized"
    assert "Traceback" not in stack.launcher.output()


@pytest.mark.parametrize("body, headers", [
    (b"[" * 100_000, {}),
    (b'{"inputs": ' * 50_000, {}),
    (b'{"inputs": "The quick"}', {"Content-Encoding": "gzip"}),
])
def test_malformed_bodies_are_400s_counted_as_failures(stack, body, headers):
    count_before, failed_before = failures(stack)
    conn = stack.connection()
    try:
        status, raw = exchange(conn, "POST", "/generate", body, headers)
    finally:
        conn.close()
    assert status == 400, raw
    assert json.loads(raw)["error_type"] == "validation"
    count_after, failed_after = failures(stack)
    assert (count_after - count_before, failed_after - failed_before) == (1, 1)
    assert "Traceback" not in stack.launcher.output()


def test_static_paths_that_do_not_exist_answer_json(stack):
    for path in ("/static/..%5capp.py", "/static/..%2f..%2fapp.py", "/static/nope.js", "/static/"):
        status, _, body = stack.get(path)
        assert status in (403, 404), (path, status)
        assert json.loads(body)["error_type"] in ("not_found", "forbidden"), (path, body)


def test_tokenize_refuses_prompts_over_the_input_limit(stack):
    max_input = json.loads(stack.get("/info")[2])["max_input_tokens"]
    conn = stack.connection()
    try:
        status, raw = exchange(conn, "POST", "/tokenize", json.dumps({"inputs": "fox " * (max_input + 10)}).encode())
        assert status == 422 and "must have less than" in json.loads(raw)["error"], raw
        status, raw = exchange(conn, "POST", "/tokenize", b'{"inputs": "The quick brown fox"}')
        assert status == 200 and [token["start"] for token in json.loads(raw)][0] == 0
    finally:
        conn.close()


def test_tokenize_takes_a_permit(stack):
    """With every permit held by streams, /tokenize is a 429 too."""
    streams = [stack.connection() for _ in range(8)]
    try:
        for conn in streams:
            conn.request("POST", "/generate_stream", b'{"inputs": "The", "parameters": {"max_new_tokens": 400}}', AUTH)
        responses = [conn.getresponse() for conn in streams]
        assert all(response.status == 200 for response in responses)
        conn = stack.connection()
        status, raw = exchange(conn, "POST", "/tokenize", b'{"inputs": "The quick"}')
        conn.close()
        assert status == 429, raw
    finally:
        for conn in streams:
            conn.close()


def test_big_tokenize_bodies_do_not_stall_running_streams(stack):
    """Four ~1.9 MB prompts at once: the event loop keeps every stream's events flowing."""
    gaps: list[float] = []

    def stream() -> None:
        conn = stack.connection()
        conn.request("POST", "/generate_stream", b'{"inputs": "The", "parameters": {"max_new_tokens": 400}}', AUTH)
        response = conn.getresponse()
        last = time.monotonic()
        while line := response.readline():
            if line.startswith(b"data:"):
                now = time.monotonic()
                gaps.append(now - last)
                last = now
        conn.close()

    big = json.dumps({"inputs": "the quick brown fox " * 95_000}).encode()
    streamer = threading.Thread(target=stream)
    streamer.start()
    time.sleep(0.3)
    threads = [threading.Thread(target=lambda: stack.post("/tokenize", big, headers=AUTH)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads + [streamer]:
        thread.join(120)
    assert len(gaps) == 400
    # Before, the big bodies held the loop for their whole tokenizing (tens of seconds on a
    # loaded 2-core host, and the stream never finished); the bound leaves slack for load.
    assert max(gaps) < 3.0, max(gaps)
    assert stack.metrics()[next(name for name in stack.metrics() if name.startswith("sluice_shard_healthy"))] == 1.0


def test_info_reports_the_tgi_api_version(stack):
    """LlamaIndex reads `version` as TGI's and turns function calling off below 2.0.1."""
    info = json.loads(stack.get("/info")[2])
    assert tuple(int(part) for part in info["version"].split(".")) >= (2, 0, 1)
    assert info["sluice_version"]


def test_launcher_help_lists_every_flag():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "router.launcher", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--num-replicas", "--max-concurrent-requests", "--keep-alive-timeout-s", "--max-batch-size",
                 "--model-id"):
        assert flag in result.stdout, flag
