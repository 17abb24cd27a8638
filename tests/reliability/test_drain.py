"""SIGTERM drains the router: new requests get 503 at once, /health turns 503, requests
already running finish; those still running when the grace period ends get one last error
(an SSE event, or a 503 on a plain request), and the process exits 0 right after."""
from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

from tests.reliability.conftest import metrics, request
from tests.router.support import wait_until

SHUTTING_DOWN = {"error": "The server is shutting down", "error_type": "unavailable"}
CUT_OFF = {"error": "The server shut down before the generation finished", "error_type": "unavailable"}


class Stream:
    """One SSE response read event by event."""

    def __init__(self, url: str, path: str, body: dict):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()

    def next_event(self) -> dict | str | None:
        """The next event's JSON ("[DONE]" as a string), or None at the end of the body."""
        while True:
            line = self.response.readline()
            if not line:
                return None
            if line.startswith(b"data: "):
                payload = line[len(b"data: "):].strip()
                return payload.decode() if payload == b"[DONE]" else json.loads(payload)

    def rest(self) -> list:
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events


def in_thread(target, *args) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(target(*args)), daemon=True)
    thread.start()
    return thread, result


def assert_refused(url: str) -> None:
    status, headers, body = request(url, "POST", "/generate", {"inputs": "hello"})
    assert status == 503 and json.loads(body) == SHUTTING_DOWN
    assert headers["Retry-After"] == "1" and int(headers["Content-Length"]) == len(body)
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    assert request(url, "POST", "/v1/chat/completions", chat)[0] == 503
    assert request(url, "GET", "/health")[0] == 503
    # Prometheus keeps scraping while the router drains.
    assert request(url, "GET", "/metrics")[0] == 200


def test_sigterm_lets_running_requests_finish_and_refuses_new_ones(start_router):
    router = start_router("--graceful-shutdown-timeout-s", "20")
    router.fake.script.token_delay_s = 0.05
    stream = Stream(router.url, "/generate_stream", {"inputs": "hello", "parameters": {"max_new_tokens": 30}})
    assert stream.next_event()["index"] == 1
    plain, plain_result = in_thread(request, router.url, "POST", "/generate",
                                    {"inputs": "hello", "parameters": {"max_new_tokens": 20}})
    assert wait_until(lambda: router.fake.num_active == 2)
    router.terminate()
    assert wait_until(lambda: request(router.url, "GET", "/health")[0] == 503, timeout_s=2)
    assert_refused(router.url)
    assert metrics(router.url)["sluice_requests_in_flight"] == 2
    events = stream.rest()
    assert [event["index"] for event in events] == list(range(2, 31))
    assert events[-1]["generated_text"] is not None
    ended_at = time.monotonic()
    plain.join(5)
    status, _, body = plain_result[0]
    assert status == 200 and json.loads(body)["generated_text"]
    # Nothing is left running, so the router goes well before its 20 s are up.
    assert router.wait(5) == 0
    assert time.monotonic() - ended_at < 2.0
    assert "drained: no request left" in router.process.output()


def test_requests_still_running_at_the_end_of_the_grace_period_get_an_error(start_router):
    grace_s = 1.0
    router = start_router("--graceful-shutdown-timeout-s", str(grace_s))
    router.fake.script.token_delay_s = 0.5  # each request would take 25 s
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 50}}
    native = Stream(router.url, "/generate_stream", body)
    chat = Stream(router.url, "/v1/chat/completions",
                  {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 50, "stream": True})
    plain, plain_result = in_thread(request, router.url, "POST", "/generate", body)
    assert native.next_event()["index"] == 1
    assert chat.next_event()["choices"][0]["delta"]["role"] == "assistant"
    assert wait_until(lambda: router.fake.num_active == 3)
    signalled_at = time.monotonic()
    router.terminate()
    assert native.rest()[-1] == CUT_OFF  # one last event, then the end of the body
    cut_at = time.monotonic() - signalled_at
    chat_events = chat.rest()
    assert chat_events[-1]["error"]["message"] == CUT_OFF["error"] and "[DONE]" not in chat_events
    plain.join(5)
    status, headers, raw = plain_result[0]
    assert status == 503 and json.loads(raw) == CUT_OFF
    assert router.wait(5) == 0
    assert grace_s - 0.2 < cut_at < grace_s + 0.5
    assert time.monotonic() - signalled_at < grace_s + 1.0
    # The cut-off closed the gRPC calls, so the shard freed their slots.
    assert wait_until(lambda: router.fake.num_active == 0)
    assert len(router.fake.cancelled) == 3

