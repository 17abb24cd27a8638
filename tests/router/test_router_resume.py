"""Resumable streams against scripted shards: a stream whose TCP connection is cut is
resumed with Last-Event-ID and every token arrives exactly once; a wrong token, a second
reader and lost events are refused; a stream nobody resumes is cancelled after the
window; with the window off nothing changes."""

from __future__ import annotations

import json
import re
import socket

import pytest
import requests

from tests.router.support import RawHttp, parse_sse, wait_until

BODY = {"inputs": "hello", "parameters": {"max_new_tokens": 20}}


def frames(raw: bytes) -> list[tuple[int, dict | str]]:
    """(id, payload) of each `id: N` + `data:` frame, in order (keep-alive comments and the
    chunked encoding's size lines left out: each frame is written as one chunk)."""
    out = []
    for match in re.finditer(rb"(?m)^id: (\d+)\ndata: (.*?)\n\n", raw):
        data = match.group(2).decode()
        out.append((int(match.group(1)), data if data == "[DONE]" else json.loads(data)))
    return out


def cut_after(stack, path: str, body: dict, num_events: int) -> tuple[str, list]:
    """Open a stream, read `num_events` events, then drop the TCP connection."""
    client = RawHttp(stack.url, path, body)
    head = client.read_headers()
    token = re.search(r"(?im)^x-resume-token: (\S+)", head).group(1)
    raw = client.read_until(b"\n\n", count=num_events + 1).split(b"\r\n\r\n", 1)[1]
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()   # a reset, as a dropped network does
    seen = [frame for frame in frames(raw)][:num_events]
    return token, seen


def resume(stack, token: str, last_id: int, **kwargs) -> requests.Response:
    return requests.get(f"{stack.url}/stream/{token}", headers={"Last-Event-ID": str(last_id)},
                        timeout=10, **kwargs)


def test_a_cut_stream_resumes_with_every_token_exactly_once(make_stack):
    stack = make_stack(stream_resume_window_s=5.0)
    stack.fake.script.token_delay_s = 0.05
    token, seen = cut_after(stack, "/generate_stream", BODY, 5)
    assert [event_id for event_id, _ in seen] == [1, 2, 3, 4, 5]
    response = resume(stack, token, 5)
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/event-stream"
    rest = frames(response.content)
    events = seen + rest
    assert [event_id for event_id, _ in events] == list(range(1, 21))
    assert [payload["index"] for _, payload in events] == list(range(1, 21))
    assert events[-1][1]["generated_text"] == "".join(payload["token"]["text"] for _, payload in events)
    assert stack.fake.cancelled == []          # generation went on while nobody read it
    # Late, but within the window: the same events again from any id.
    assert [event_id for event_id, _ in frames(resume(stack, token, 18).content)] == [19, 20]


def test_openai_streams_resume_up_to_done(make_stack):
    stack = make_stack(stream_resume_window_s=5.0)
    stack.fake.script.token_delay_s = 0.05
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "stream": True}
    token, seen = cut_after(stack, "/v1/chat/completions", body, 3)
    rest = frames(resume(stack, token, seen[-1][0]).content)
    assert [event_id for event_id, _ in seen + rest] == list(range(1, 12)) and rest[-1][1] == "[DONE]"


def test_responses_streams_resume_with_their_named_events(make_stack):
    stack = make_stack(stream_resume_window_s=5.0)
    stack.fake.script.token_delay_s = 0.05
    client = RawHttp(stack.url, "/v1/responses", {"model": "m", "input": "hi", "max_output_tokens": 8, "stream": True})
    token = re.search(r"(?im)^x-resume-token: (\S+)", client.read_headers()).group(1)
    head = client.read_until(b"response.output_text.delta", count=2).split(b"\r\n\r\n", 1)[1]
    client.close()
    last_id = max(int(found) for found in re.findall(rb"(?m)^id: (\d+)$", head))
    rest = resume(stack, token, last_id).content.decode()
    assert rest.startswith(f"id: {last_id + 1}\nevent: ")
    assert "event: response.incomplete\n" in rest    # its last event: max_output_tokens reached


def test_only_the_token_opens_a_stream_and_only_one_reader_at_a_time(make_stack):
    stack = make_stack(stream_resume_window_s=5.0)
    stack.fake.script.token_delay_s = 0.05
    token, seen = cut_after(stack, "/generate_stream", {"inputs": "hi", "parameters": {"max_new_tokens": 40}}, 2)
    wrong = resume(stack, token[:-2] + ("AA" if not token.endswith("AA") else "BB"), 0)
    assert wrong.status_code == 404 and wrong.json()["error_type"] == "not_found"
    reader = resume(stack, token, 2, stream=True)
    assert reader.status_code == 200
    second = resume(stack, token, 2)
    assert second.status_code == 409 and second.json()["error_type"] == "conflict"
    reader.close()
    assert resume(stack, token, "x").status_code == 422


def test_a_stream_nobody_resumes_is_cancelled_after_the_window(make_stack):
    stack = make_stack(stream_resume_window_s=0.5)
    stack.fake.script.token_delay_s = 0.05
    token, _ = cut_after(stack, "/generate_stream", {"inputs": "hi", "parameters": {"max_new_tokens": 50}}, 2)
    assert wait_until(lambda: len(stack.fake.cancelled) == 1 and stack.fake.num_active == 0, 5.0)
    assert wait_until(lambda: resume(stack, token, 2).status_code == 404, 3.0)   # and forgotten


def test_with_the_window_off_streams_are_as_before(stack):
    response = requests.post(stack.url + "/generate_stream", json=BODY, timeout=10)
    assert "X-Resume-Token" not in response.headers and b"id:" not in response.content
    assert len(parse_sse(response.content)) == 20
    assert requests.get(stack.url + "/stream/anything", timeout=5).status_code == 404


def test_the_store_is_bounded_in_streams_and_bytes():
    from router import resume

    streams = resume.ResumableStreams(window_s=60, max_streams=3)
    first, second = streams.open(), streams.open()
    first.finish()
    third = streams.open()
    fourth = streams.open()           # full: the oldest finished one goes first
    assert streams.get(first.token) is None and streams.get(second.token) is second
    assert {streams.get(r.token) for r in (third, fourth)} == {third, fourth}
    big = streams.open()              # full again, none finished: the oldest goes
    assert streams.get(second.token) is None
    for _ in range(5):
        big.append(b"data: " + b"x" * (resume.MAX_BYTES // 4) + b"\n\n")
    assert big.num_bytes <= resume.MAX_BYTES and big.first_id > 1   # older events dropped
    with pytest.raises(resume.EventsDropped):
        big.frames_after(0)
