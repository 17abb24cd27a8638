"""Fixtures shared by the suites that run real processes on loopback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose combined output goes to a log file (shown on failure)."""

    def __init__(self, args: list[str], log_path: Path, prefix: Sequence[str] = ()):
        """`prefix` runs the interpreter through a wrapper, e.g. `ip netns exec NAME`."""
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.popen = subprocess.Popen([*prefix, sys.executable, *args], cwd=ROOT, stdout=self._log,
                                      stderr=subprocess.STDOUT, env={**os.environ,
                                                                      "PYTHONUNBUFFERED": "1"})

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{what} exited ({self.popen.returncode}):\n{self.output()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {timeout_s} s:\n{self.output()[-4000:]}")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded SmolLM2, converted once and cached like `make run` does."""
    from shard.config import from_args
    from shard.loader import resolve

    return resolve(None, from_args([]).cache_dir).path


@contextmanager
def serving(args: Sequence[str], log_path: Path, timeout_s: float = 300):
    """Runs `python <args> --port <free port>` (the launcher or the router) and yields
    (url, process) once its /health answers 200; stops it afterwards."""
    port = free_port()
    process = Process([*args, "--port", str(port)], log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_for(lambda: http_ok(url + "/health"), timeout_s, " ".join(args[:2]))
        yield url, process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def stack_url(default_model_dir, tmp_path_factory):
    """`python -m router.launcher` (what `make run` runs): one shard + the router."""
    with serving(["-m", "router.launcher"], tmp_path_factory.mktemp("stack") / "launcher.log") as (url, _):
        yield url
