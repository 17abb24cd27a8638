"""A real stack for the hardening tests: `python -m router.launcher` (the router and real
shard processes over gRPC, what `make run` runs) on loopback, serving a tiny random Llama
(fast, fp32, deterministic) or the default SmolLM2. No scripted parts."""
from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from tests.conftest import Process, free_port, http_ok
from tests.shard.conftest import make_tiny_model


CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass
class RealStack:
    url: str
    launcher: Process

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname, parts.port

    def connection(self, timeout_s: float = 30) -> http.client.HTTPConnection:
        host, port = self.host_port
        return http.client.HTTPConnection(host, port, timeout=timeout_s)

    def post(self, path: str, body: object, headers: dict[str, str] | None = None,
             timeout_s: float = 60) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection(timeout_s)
        try:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            conn.request("POST", path, raw, {"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def get(self, path: str, timeout_s: float = 30) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection(timeout_s)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def metrics(self) -> dict[str, float]:
        """Every sample on /metrics, by its name with labels."""
        from tests.reliability.conftest import metrics  # that module imports this one

        return metrics(self.url)

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The launcher's children by kind: "router" and "shard"."""
        kinds: dict[str, list[psutil.Process]] = {"router": [], "shard": []}
        for child in psutil.Process(self.launcher.popen.pid).children():
            cmd = child.cmdline()
            if cmd[1:3] == ["-m", "shard"]:
                kinds["shard"].append(child)
            elif cmd[1:3] == ["-m", "router"]:
                kinds["router"].append(child)
        return kinds


def sse_events(body: bytes) -> list[dict]:
    """The JSON payloads of an SSE body (keep-alive comments and [DONE] left out)."""
    events = []
    for frame in body.decode().split("\n\n"):
        for line in frame.splitlines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                events.append(json.loads(line[5:]))
    return events


@contextmanager
def running_stack(log_path: Path, *flags: str, model_dir: Path | None = None,
                  timeout_s: float = 300) -> Iterator[RealStack]:
    """One stack for a whole module (start_stack below starts them per test)."""
    port = free_port()
    model_flags = ["--model-id", str(model_dir), "--dtype", "float32"] if model_dir else []
    process = Process(["-m", "router.launcher", *model_flags, "--port", str(port), *flags], log_path)
    stack = RealStack(f"http://127.0.0.1:{port}", process)
    try:
        process.wait_for(lambda: http_ok(stack.url + "/health"), timeout_s, "router.launcher")
        yield stack
    finally:
        process.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny Llama, with ChatML as its chat template so /v1/chat/completions serves it too."""
    path = make_tiny_model(tmp_path_factory.mktemp("reliability-tiny-llama"))
    (path / "chat_template.jinja").write_text(CHATML)
    return path


@pytest.fixture
def start_stack(tmp_path) -> Iterator[Callable[..., RealStack]]:
    """start_stack(*launcher flags, model_dir=None, rlimit_nofile=None) -> a ready RealStack.
    With `model_dir` the shards serve it in float32 (pass a tiny model for speed); without,
    the default model as `make run` serves it. `rlimit_nofile` (soft, hard) starts the
    launcher, and so the router and shards, under that open-file limit."""
    started: list[RealStack] = []

    def start(*flags: str, model_dir: Path | None = None, timeout_s: float = 300,
              rlimit_nofile: tuple[int, int] | None = None) -> RealStack:
        port = free_port()
        model_flags = ["--model-id", str(model_dir), "--dtype", "float32"] if model_dir else []
        prefix = ["prlimit", "--nofile={}:{}".format(*rlimit_nofile), "--"] if rlimit_nofile else []
        process = Process(["-m", "router.launcher", *model_flags, "--port", str(port), *flags],
                          tmp_path / f"launcher-{len(started)}.log", prefix)
        stack = RealStack(f"http://127.0.0.1:{port}", process)
        started.append(stack)
        process.wait_for(lambda: http_ok(stack.url + "/health"), timeout_s, "router.launcher")
        return stack

    yield start
    for stack in started:
        stack.launcher.stop()


__all__ = ["RealStack", "sse_events", "start_stack", "tiny_model", "free_port"]
