"""The README documents every flag, route and metric the code has (issue: "the README
documents every flag, route and metric"): a new one without a line there fails here."""
from __future__ import annotations

import re

import pytest

from router.app import create_app
from router.config import RouterConfig, flag_names as router_flags
from shard.config import build_parser as shard_parser
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
METRIC_SOURCES = ["router/metrics.py", "shard/metrics.py"]


def documented(name: str) -> bool:
    return f"`{name}" in README or re.search(rf"[`\s,]{re.escape(name)}[`\s,]", README) is not None


def cli_flags() -> list[str]:
    shard = {s for a in shard_parser()._actions for s in a.option_strings}
    flags = (router_flags() | shard) - {"--help", "-h"}
    return sorted(f for f in flags if "_" not in f)       # underscore spellings are aliases


@pytest.mark.parametrize("flag", cli_flags())
def test_every_flag_is_documented(flag):
    assert documented(flag), f"{flag} is missing from the README's flag table"


def routes() -> list[str]:
    app = create_app(RouterConfig(shard_uris=("127.0.0.1:1",)))
    paths = {r.resource.canonical for r in app.router.routes() if r.method != "HEAD"}
    # Static assets (/static/..., /docs/{name}) belong to the pages that load them.
    return sorted(p for p in paths if not p.startswith("/static") and "{" not in p)


@pytest.mark.parametrize("path", routes())
def test_every_route_is_documented(path):
    assert f"{path}`" in README or f"{path} " in README, f"{path} is missing from the README"


def metric_names() -> list[str]:
    names = set()
    for source in METRIC_SOURCES:
        names |= set(re.findall(r'"((?:tgi|sluice)_[a-z_]+)"', (ROOT / source).read_text()))
    return sorted(names)


@pytest.mark.parametrize("name", metric_names())
def test_every_metric_is_documented(name):
    assert name in README, f"metric {name} is missing from the README"
