"""`--num-replicas 2` through the launcher: a shard killed mid-stream fails only its own
streams (an error event within 2 s), the other replica keeps serving, and the launcher
restarts the dead one, which rejoins the pool."""
from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from urllib.parse import urlsplit

import psutil
import pytest

from tests.conftest import Process, serving
from tests.e2e.test_stack import post

PROMPT = "<|im_start|>user\nTell a long story about a dragon.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def replicas(default_model_dir, tmp_path_factory):
    args = ["-m", "router.launcher", "--num-replicas", "2", "--health-check-interval-s", "0.2"]
    with serving(args, tmp_path_factory.mktemp("replicas") / "launcher.log") as (url, process):
        deadline = time.monotonic() + 60
        while len(healthy_shards(url)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield url, process


def healthy_shards(url: str) -> list[str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", "/metrics")
    lines = conn.getresponse().read().decode().splitlines()
    return [line.split('"')[1] for line in lines
            if line.startswith("sluice_shard_healthy{") and line.endswith(" 1.0")]


def shard_pids(launcher: Process) -> dict[str, int]:
    """Shard processes by their gRPC address, read from their command lines."""
    pids = {}
    for child in psutil.Process(launcher.popen.pid).children():
        cmd = child.cmdline()
        if cmd[1:3] == ["-m", "shard"]:
            pids[f"127.0.0.1:{cmd[cmd.index('--port') + 1]}"] = child.pid
    return pids


def open_stream(url: str):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 400}}
    conn.request("POST", "/generate_stream", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    return response


def read_event(response) -> dict:
    while True:
        line = response.readline()
        if line.startswith(b"data: "):
            return json.loads(line[len(b"data: "):])
        if not line:
            raise EOFError("stream closed without an event")


def watch(stream, killed: threading.Event, outcomes: list) -> None:
    """Read until the stream errors, or until it has produced 20 events after the kill."""
    after_kill = 0
    while True:
        event = read_event(stream)
        if "error" in event:
            outcomes.append(("error", time.monotonic(), event))
            return
        after_kill += killed.is_set()
        if event["generated_text"] is not None or after_kill >= 20:
            outcomes.append(("alive", time.monotonic(), event))
            return


def test_killed_replica_fails_its_streams_fast_and_is_restarted(replicas):
    url, launcher = replicas
    streams = [open_stream(url) for _ in range(2)]       # least-loaded: one per replica
    for stream in streams:
        read_event(stream)
    killed, outcomes = threading.Event(), []
    watchers = [threading.Thread(target=watch, args=(s, killed, outcomes)) for s in streams]
    for watcher in watchers:
        watcher.start()
    victim_uri, victim_pid = sorted(shard_pids(launcher).items())[0]
    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    killed.set()
    for watcher in watchers:
        watcher.join(60)
    assert sorted(kind for kind, _, _ in outcomes) == ["alive", "error"], outcomes
    _, errored_at, error = next(o for o in outcomes if o[0] == "error")
    assert errored_at - killed_at < 2.0 and error["error_type"] == "generation"
    # New requests keep working while the dead replica is away.
    status, _, raw = post(url, "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 3}})
    assert status == 200, raw
    # The launcher restarts the shard; it rejoins the pool under the same address.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim_uri not in healthy_shards(url):
        time.sleep(0.5)
    assert victim_uri in healthy_shards(url)
    assert shard_pids(launcher)[victim_uri] != victim_pid
    for stream in streams:
        stream.close()


def cpu_masks(pid: int) -> set[frozenset[int]]:
    """The CPU mask of each of a process's threads (the compute team's among them)."""
    return {frozenset(os.sched_getaffinity(thread.id)) for thread in psutil.Process(pid).threads()}


def test_each_replica_computes_on_its_own_cpus(replicas):
    """Also the restarted one: the test above ran first. The launcher's CPUs, split."""
    url, launcher = replicas
    cpus = os.sched_getaffinity(launcher.popen.pid)
    if len(cpus) < 2:
        pytest.skip("one CPU cannot be split between two replicas")
    status, _, raw = post(url, "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 3}})
    assert status == 200, raw     # each replica's compute threads exist once it has computed
    masks = [cpu_masks(pid) for pid in shard_pids(launcher).values()]
    assert len(masks) == 2 and all(len(per_thread) == 1 for per_thread in masks), masks
    shares = [next(iter(per_thread)) for per_thread in masks]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == cpus, shares
