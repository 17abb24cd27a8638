"""The whole stack as `make run` starts it (launcher -> shard + router), on SmolLM2,
driven the way users drive it: raw HTTP, curl, and huggingface_hub 2.x."""
from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
from urllib.parse import urlsplit

from huggingface_hub import AsyncInferenceClient, InferenceClient

PROMPT = "What is Deep Learning?"


def post(url: str, path: str, body: dict) -> tuple[int, dict, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def metric(url: str, name: str) -> float:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_sse_events_arrive_one_by_one_while_generating(stack_url):
    parts = urlsplit(stack_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 40, "details": True}}
    conn.request("POST", "/generate_stream", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    first = response.readline()
    assert first.startswith(b"data: {") and first.endswith(b"}\n")
    assert response.readline() == b"\n"
    # The first event is in hand while the request is still being generated.
    assert metric(stack_url, "sluice_requests_in_flight") >= 1
    raw = first + b"\n" + response.read()
    events = [json.loads(chunk[len(b"data: "):]) for chunk in raw.split(b"\n\n") if chunk.strip()]
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    for event in events[:-1]:
        assert set(event) == {"index", "token", "generated_text", "details"}
        assert event["generated_text"] is None and event["details"] is None
        assert set(event["token"]) == {"id", "text", "logprob", "special"}
    last = events[-1]
    assert last["details"]["finish_reason"] in ("length", "eos_token")
    assert last["details"]["generated_tokens"] == len(events)
    assert last["generated_text"] == "".join(e["token"]["text"] for e in events
                                             if not e["token"]["special"])
    assert b"[DONE]" not in raw


def test_streamed_text_equals_non_streamed_greedy_text(stack_url):
    parameters = {"max_new_tokens": 24, "do_sample": False}
    status, _, raw = post(stack_url, "/generate_stream", {"inputs": PROMPT, "parameters": parameters})
    assert status == 200
    events = [json.loads(c[len(b"data: "):]) for c in raw.split(b"\n\n") if c.strip()]
    streamed = "".join(e["token"]["text"] for e in events if not e["token"]["special"])
    status, _, raw = post(stack_url, "/generate", {"inputs": PROMPT, "parameters": parameters})
    assert status == 200
    assert json.loads(raw)["generated_text"] == streamed == events[-1]["generated_text"]
    status, _, raw = post(stack_url, "/", {"inputs": PROMPT, "parameters": parameters,
                                           "stream": False})
    listed = json.loads(raw)
    assert status == 200 and isinstance(listed, list) and len(listed) == 1
    assert listed[0]["generated_text"] == streamed


def test_huggingface_hub_streams_tokens(stack_url):
    client = InferenceClient(stack_url)
    tokens = list(client.text_generation(PROMPT, max_new_tokens=12, stream=True))
    assert len(tokens) == 12 and all(isinstance(t, str) for t in tokens)
    items = list(client.text_generation(PROMPT, max_new_tokens=12, stream=True, details=True))
    assert type(items[0]).__name__ == "TextGenerationStreamOutput"
    assert all(item.details is None for item in items[:-1])
    assert items[-1].details.finish_reason == "length"
    assert items[-1].details.generated_tokens == 12
    assert "".join(tokens) == items[-1].generated_text


def test_async_huggingface_hub_streams_tokens(stack_url):
    async def run():
        client = AsyncInferenceClient(stack_url)
        tokens = [t async for t in await client.text_generation(PROMPT, max_new_tokens=12,
                                                                   stream=True)]
        items = [i async for i in await client.text_generation(
            PROMPT, max_new_tokens=12, stream=True, details=True)]
        return tokens, items

    tokens, items = asyncio.run(run())
    assert len(tokens) == 12
    assert items[-1].details.finish_reason == "length"
    assert items[-1].details.generated_tokens == 12


def test_readme_curl_command(stack_url):
    port = urlsplit(stack_url).port
    command = ("curl -N 127.0.0.1:%d/generate_stream -X POST -d '{\"inputs\":\"What is Deep "
               "Learning?\",\"parameters\":{\"max_new_tokens\":20}}' -H "
               "'Content-Type: application/json'" % port)
    output = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120).stdout
    events = [json.loads(line[len("data: "):]) for line in output.splitlines() if line.startswith("data: ")]
    assert len(events) == 20
    assert "Deep Learning" in events[-1]["generated_text"]
