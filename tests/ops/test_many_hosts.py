"""Shards on two hosts (network namespaces joined by veth pairs), the router on this one
reaching them by --shard-uri. Cutting one host's link mid-stream must end that host's
streams with an error event within 2 s, even though a downed link sends no FIN or RST,
while the other host's streams finish and new requests are served; once the link is back,
the host rejoins, holding none of the abandoned requests."""
from __future__ import annotations

import time

import grpc
import pytest

from protos import shard_pb2, shard_pb2_grpc
from tests.conftest import Process, free_port, http_ok
from tests.ops import netns
from tests.ops.clients import Stream, post, sample, scrape

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))

GRPC_PORT, METRICS_PORT = 50051, 9000
# Random weights make an end-of-sequence token unlikely: streams run their full length.
SHARD_FLAGS = ["--load-format", "dummy", "--dtype", "float32", "--num-threads", "1",
               "--max-batch-size", "4", "--max-total-tokens", "512"]


@pytest.fixture(scope="module")
def cluster(default_model_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("hosts")
    processes: list[Process] = []
    with netns.hosts(2) as hosts:
        try:
            for index, host in enumerate(hosts):
                processes.append(Process(
                    ["-m", "shard", "--model-id", str(default_model_dir), *SHARD_FLAGS,
                     "--hostname", host.address, "--port", str(GRPC_PORT),
                     "--metrics-port", str(METRICS_PORT)],
                    logs / f"shard-{index}.log", prefix=host.exec_prefix))
            for process in processes:
                process.wait_for(lambda p=process: "SHARD READY" in p.output(), 300, "shard")
            port = free_port()
            uris = [arg for host in hosts for arg in ("--shard-uri", f"{host.address}:{GRPC_PORT}")]
            router = Process(["-m", "router", *uris, "--port", str(port)], logs / "router.log")
            processes.append(router)
            url = f"http://127.0.0.1:{port}"
            router.wait_for(lambda: http_ok(url + "/health"), 120, "router")
            yield url, hosts
        finally:
            for process in reversed(processes):
                process.stop()


def outstanding(url: str, host: netns.Host) -> float | None:
    return sample(scrape(url + "/metrics"), "sluice_shard_outstanding_requests",
                  shard=f"{host.address}:{GRPC_PORT}")


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_cut_link_fails_that_hosts_streams_within_2s_and_the_other_host_serves(cluster):
    url, (cut_host, other_host) = cluster
    streams = [Stream(url, max_new_tokens=200) for _ in range(4)]
    for stream in streams:
        assert stream.first_event.wait(120) and stream.status == 200, stream.events
    # Least-outstanding placement: two streams on each host.
    assert outstanding(url, cut_host) == 2 and outstanding(url, other_host) == 2

    cut_at = time.monotonic()
    cut_host.cut()
    assert wait_until(lambda: sum(s.error_at is not None for s in streams) == 2, 5), \
        [s.events[-1] for s in streams]
    failed = [s for s in streams if s.error_at is not None]
    for stream in failed:
        assert stream.error_at - cut_at < 2.0
        assert stream.events[-1][1]["error_type"] == "generation"
    for stream in streams:
        if stream not in failed:
            stream.join(180)
            assert stream.finished, stream.events[-1]
            assert stream.events[-1][0] > cut_at + 2.0  # it was still streaming after the cut
    status, body = post(url, "/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 4}})
    assert status == 200, body

    cut_host.restore()
    assert_rejoins_with_no_dead_requests(url, cut_host)


def assert_rejoins_with_no_dead_requests(url: str, host: netns.Host) -> None:
    healthy = {"shard": f"{host.address}:{GRPC_PORT}"}
    assert wait_until(lambda: sample(scrape(url + "/metrics"), "sluice_shard_healthy", **healthy) == 1, 10)
    # The shard's own keepalive noticed that the router's connection was gone and cancelled
    # both requests, instead of generating for nobody up to max_new_tokens.
    shard_metrics = scrape(f"http://{host.address}:{METRICS_PORT}/metrics")
    assert sample(shard_metrics, "sluice_shard_cancelled_requests_total") == 2
    with grpc.insecure_channel(f"{host.address}:{GRPC_PORT}") as channel:
        load = shard_pb2_grpc.ShardStub(channel).Health(shard_pb2.HealthRequest(), timeout=5)
    assert (load.num_running, load.num_waiting) == (0, 0)
