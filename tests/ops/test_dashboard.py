"""The Grafana dashboard against what the stack really exports: every metric a panel
queries is in the live router's or shards' /metrics, and a real Prometheus, scraping them
with router/deploy/prometheus.yml, answers every panel's query with numbers."""
from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request

import pytest

from tests.ops.clients import Stream, post, scrape
from tests.ops.conftest import MAX_CONCURRENT_REQUESTS, dashboard_queries

METRIC_NAME = re.compile(r"\b(?:tgi|sluice)_[a-z0-9_]+")
RATE_WINDOW = "30s"   # stands in for Grafana's $__rate_interval
REQUIRED_PANELS = {"Queue size", "Batch size", "Tokens/s", "Time to first token",
                   "Inter-token latency", "429 rate", "Deadline outcomes", "Priority outcomes"}


def prometheus_api(url: str, path: str, **params: str) -> list | dict:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def all_targets_up(prometheus_url: str) -> bool:
    targets = prometheus_api(prometheus_url, "targets")["activeTargets"]
    return len(targets) == 3 and all(t["health"] == "up" for t in targets)


@pytest.fixture(scope="module")
def traffic_at(loopback_stack, prometheus_url) -> float:
    """Streams, a 429 and plain requests, sent once every target has been scraped (so
    rate() sees them as increases); returns a wall-clock time just after them."""
    wait_for(lambda: all_targets_up(prometheus_url), 30, "every scrape target up")
    url = loopback_stack.router_url
    streams = [Stream(url, max_new_tokens=400) for _ in range(MAX_CONCURRENT_REQUESTS)]
    for stream in streams:
        assert stream.first_event.wait(60) and stream.status == 200
    status, body = post(url, "/generate", {"inputs": "one too many", "parameters": {"max_new_tokens": 2}})
    assert status == 429, body
    for stream in streams:
        stream.join(60)
        assert stream.finished
    for _ in range(3):
        assert post(url, "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 20}})[0] == 200
    done_at = time.time() + 2
    wait_for(lambda: time.time() > done_at + 2, 10, "two more scrapes")
    return done_at


def test_the_dashboard_has_the_panels_operators_need():
    assert REQUIRED_PANELS <= {title for title, _ in dashboard_queries()}


def test_every_metric_a_panel_queries_is_exported(loopback_stack, traffic_at):
    exported = {name for name, _ in scrape(loopback_stack.router_url + "/metrics")}
    for url in loopback_stack.shard_metrics_urls:
        exported |= {name for name, _ in scrape(url)}
    for title, expr in dashboard_queries():
        names = METRIC_NAME.findall(expr)
        assert names, f"{title}: {expr} queries none of our metrics"
        missing = set(names) - exported
        assert not missing, f"{title}: {sorted(missing)} not exported by router or shards"


def test_prometheus_scrapes_the_router_and_both_shards(prometheus_url, traffic_at):
    jobs = sorted(t["labels"]["job"] for t in prometheus_api(prometheus_url, "targets")["activeTargets"])
    assert jobs == ["router", "shards", "shards"]
    for _, expr in dashboard_queries():
        for name in METRIC_NAME.findall(expr):
            assert prometheus_api(prometheus_url, "series", **{"match[]": name}), f"no series {name}"


def test_every_panel_query_returns_numbers_from_prometheus(prometheus_url, traffic_at):
    values = {}
    for title, expr in dashboard_queries():
        promql = expr.replace("$__rate_interval", RATE_WINDOW)
        result = prometheus_api(prometheus_url, "query", query=promql, time=str(traffic_at))["result"]
        assert result, f"{title}: {promql} returned nothing"
        numbers = [float(series["value"][1]) for series in result]
        assert all(math.isfinite(number) for number in numbers), f"{title}: {promql} -> {numbers}"
        values[expr] = sum(numbers)
    by_title = {title: values[expr] for title, expr in dashboard_queries()}
    assert by_title["429 rate"] > 0
    assert by_title["Tokens/s"] > 0
    assert by_title["Time to first token"] > 0
