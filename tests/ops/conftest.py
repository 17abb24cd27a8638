"""The compose topology without containers: two shards and the router on loopback (a tiny
random-weight model keeps it cheap), and a real Prometheus server (Debian's package)
running router/deploy/prometheus.yml with its targets pointed at them."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass

import pytest
import yaml

from tests.conftest import ROOT, Process, free_port, http_ok
from tests.shard.conftest import make_tiny_model

DEPLOY = ROOT / "router" / "deploy"
MAX_CONCURRENT_REQUESTS = 2


@dataclass(frozen=True)
class LoopbackStack:
    router_url: str
    shard_uris: tuple[str, ...]
    shard_metrics_urls: tuple[str, ...]


@pytest.fixture(scope="package")
def loopback_stack(tmp_path_factory):
    logs = tmp_path_factory.mktemp("stack")
    model_dir = make_tiny_model(logs / "tiny-llama")
    processes, metrics_ports, uris = [], [], []
    try:
        for index in range(2):
            port, metrics_port = free_port(), free_port()
            processes.append(Process(["-m", "shard", "--model-id", str(model_dir), "--dtype", "float32",
                                   "--num-threads", "1", "--port", str(port),
                                   "--metrics-port", str(metrics_port)], logs / f"shard-{index}.log"))
            metrics_ports.append(metrics_port)
            uris.append(f"127.0.0.1:{port}")
        for shard in processes:
            shard.wait_for(lambda s=shard: "SHARD READY" in s.output(), 120, "shard")
        port = free_port()
        shard_flags = [arg for uri in uris for arg in ("--shard-uri", uri)]
        router = Process(["-m", "router", *shard_flags, "--port", str(port), "--max-concurrent-requests",
                          str(MAX_CONCURRENT_REQUESTS)], logs / "router.log")
        processes.append(router)
        url = f"http://127.0.0.1:{port}"
        router.wait_for(lambda: http_ok(url + "/health"), 60, "router")
        yield LoopbackStack(url, tuple(uris), tuple(f"http://127.0.0.1:{p}/metrics" for p in metrics_ports))
    finally:
        for process in reversed(processes):
            process.stop()


def loopback_prometheus_config(stack: LoopbackStack) -> dict:
    """router/deploy/prometheus.yml, each job's targets replaced by the loopback ones."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    targets = {"router": [stack.router_url.removeprefix("http://")],
               "shards": [url.removeprefix("http://").removesuffix("/metrics")
                          for url in stack.shard_metrics_urls]}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets.pop(job["job_name"])}]
    assert not targets, f"prometheus.yml has no job for {sorted(targets)}"
    return config


@pytest.fixture(scope="module")
def prometheus_url(loopback_stack, tmp_path_factory):
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is missing: `make test-deps` installs Debian's package"
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(loopback_prometheus_config(loopback_stack)))
    port = free_port()
    with open(workdir / "prometheus.log", "w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: process.poll() is None and http_ok(url + "/-/ready"), 30,
              lambda: (workdir / "prometheus.log").read_text()[-3000:])
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(ready, timeout_s: float, explain) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout_s} s:\n{explain()}")
        time.sleep(0.2)


def load(path) -> dict:
    return yaml.safe_load(path.read_text())


def instructions(dockerfile) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def image_env(dockerfile) -> dict[str, str]:
    env = {}
    for instruction, args in instructions(dockerfile):
        if instruction == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(args))
    return env


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the provisioned dashboard."""
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "sluice.json").read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel["targets"]]
