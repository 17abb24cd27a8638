"""Resumable streams through the real stack: a stream from a real shard whose TCP
connection is reset mid-answer, resumed with Last-Event-ID, gets every token exactly
once, and its text is the one the same greedy request gets unbroken."""
from __future__ import annotations

from tests.reliability.real_stack import sse_events
from tests.router.test_router_resume import cut_after, frames, resume

BODY = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 48, "ignore_eos_token": True}}


def test_a_reset_stream_resumes_from_a_real_shard(start_stack, tiny_model):
    stack = start_stack("--stream-resume-window-s", "30", model_dir=tiny_model)
    token, seen = cut_after(stack, "/generate_stream", BODY, 4)
    rest = frames(resume(stack, token, seen[-1][0]).content)
    events = seen + rest
    assert [event_id for event_id, _ in events] == list(range(1, 49))
    whole = sse_events(stack.post("/generate_stream", BODY)[2])
    assert [payload["token"]["id"] for _, payload in events] == [event["token"]["id"] for event in whole]
    assert events[-1][1]["generated_text"] == whole[-1]["generated_text"]
    # Another client, without the token, cannot read it.
    assert stack.get("/stream/" + "x" * len(token))[0] == 404
