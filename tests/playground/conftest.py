"""Fixtures for driving the playground in headless Chromium (Debian's package, installed by
`make test-deps`) against the real launcher, shard and router."""
from __future__ import annotations

import re
import shutil
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, serving

CHROMIUM = "/usr/bin/chromium"
# What works as root in a container: no sandbox, no GPU, and nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
API_KEY = "playground-secret"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make test-deps` (Debian package `chromium`)")
    from playwright.sync_api import sync_playwright

    # Playwright gives every launch a fresh temporary profile (the --user-data-dir).
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1240, "height": 760})
    page = context.new_page()
    page.set_default_timeout(120_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def playground_url(default_model_dir, tmp_path_factory) -> Iterator[str]:
    """The stack `make run` starts, in float32: bfloat16 CPU kernels are not batch
    invariant, so the two greedy requests the page sends at once could end differently."""
    log = tmp_path_factory.mktemp("playground") / "launcher.log"
    with serving(["-m", "router.launcher", "--dtype", "float32"], log) as (url, _):
        yield url


@pytest.fixture(scope="module")
def auth_url(playground_url, tmp_path_factory) -> Iterator[str]:
    """A second router on the same shard, with an API key and room for one request."""
    log = tmp_path_factory.mktemp("playground-auth") / "router.log"
    args = ["-m", "router", "--shard-uri", shard_uri(playground_url), "--api-key", API_KEY,
            "--max-concurrent-requests", "1"]
    with serving(args, log, timeout_s=120) as (url, _):
        yield url


@pytest.fixture(scope="module")
def resume_url(playground_url, tmp_path_factory) -> Iterator[str]:
    """A router on the same shard whose streams are resumable."""
    log = tmp_path_factory.mktemp("playground-resume") / "router.log"
    args = ["-m", "router", "--shard-uri", shard_uri(playground_url), "--stream-resume-window-s", "30"]
    with serving(args, log, timeout_s=120) as (url, _):
        yield url


def shard_uri(url: str) -> str:
    """The launcher picks the shard's port; the router names it in a metric label."""
    match = re.search(r'sluice_shard_healthy\{shard="([^"]+)"\}', read_metrics(url))
    assert match, "no sluice_shard_healthy in /metrics"
    return match.group(1)


def read_metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return response.read().decode()


def metric(url: str, name: str) -> float:
    match = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", read_metrics(url), re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))
