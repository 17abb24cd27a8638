"""SIGTERM to `python -m router.launcher` (what `make run` runs, on SmolLM2): the launcher
stops the router first and waits for its drain, so a stream that is running finishes on
its shard before the shard is stopped; everything exits 0."""
from __future__ import annotations

import time

import psutil

from tests.conftest import Process, free_port, http_ok
from tests.reliability.test_drain import Stream

PROMPT = "<|im_start|>user\nTell a long story about a dragon.<|im_end|>\n<|im_start|>assistant\n"


def test_launcher_sigterm_drains_the_router_before_stopping_shards(default_model_dir, tmp_path):
    port = free_port()
    launcher = Process(["-m", "router.launcher", "--port", str(port), "--graceful-shutdown-timeout-s", "60"],
                       tmp_path / "launcher.log")
    url = f"http://127.0.0.1:{port}"
    try:
        launcher.wait_for(lambda: http_ok(url + "/health"), 300, "launcher")
        children = psutil.Process(launcher.popen.pid).children()
        stream = Stream(url, "/generate_stream", {"inputs": PROMPT, "parameters": {
            "max_new_tokens": 80, "details": True, "stop": []}})
        assert stream.next_event()["index"] == 1
        signalled_at = time.monotonic()
        launcher.popen.terminate()
        events = stream.rest()
        finished_at = time.monotonic()
        assert launcher.popen.wait(30) == 0
        assert all(not child.is_running() for child in children)
    finally:
        launcher.stop()
    assert "draining: 1 requests running" in launcher.output()  # it was mid-stream
    assert "error" not in events[-1] and events[-1]["details"]["finish_reason"] in ("length", "eos_token")
    assert finished_at - signalled_at > 0.5  # it generated on after the signal
