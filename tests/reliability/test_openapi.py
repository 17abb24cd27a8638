"""The OpenAPI document at /api-doc/openapi.json: valid OpenAPI 3.0, every route of the app
in it, its bounds this router's own (they move with the flags), and each bound where
validation draws the line; and the /docs page, which renders it from same-origin files."""
from __future__ import annotations

import json
import shutil

import pytest
from openapi_spec_validator import validate

from router.app import create_app
from router.config import RouterConfig
from router.docs.bodies import ref
from router.state import ROUTE_TABLE
from router.schemas import PARAMETER_KINDS
from tests.reliability.conftest import request

CHROMIUM = "/usr/bin/chromium"


def document(url: str) -> dict:
    status, headers, body = request(url, "GET", "/api-doc/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    return json.loads(body)


def parameter_schema(doc: dict, name: str) -> dict:
    return doc["components"]["schemas"]["GenerateRequest"]["properties"]["parameters"]["properties"][name]


def test_the_document_is_valid_and_covers_every_route(start_router):
    router = start_router("--api-key", "secret")
    doc = document(router.url)
    validate(doc)
    app = create_app(RouterConfig(shard_uris=("127.0.0.1:1",)))
    routes = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and not route.resource.canonical.startswith(("/static", "/docs/{"))}
    documented = {(method, path) for path, operations in doc["paths"].items() for method in operations}
    assert documented == routes
    # Every parameter the parser reads, and only those.
    parameters = doc["components"]["schemas"]["GenerateRequest"]["properties"]["parameters"]
    assert set(parameters["properties"]) == set(PARAMETER_KINDS)
    assert doc["paths"]["/generate"]["post"]["security"] == [{"BearerAuth": []}]
    assert "security" not in doc["paths"]["/health"]["get"]
    # Each guarded route's 401 is in its own dialect's shape, as the route table declares it.
    table = create_app(RouterConfig(shard_uris=("127.0.0.1:1",)))[ROUTE_TABLE]
    for route in table.routes:
        operation = doc["paths"].get(route.path, {}).get(route.method.lower(), {})  # assets are not documented
        assert ("security" in operation) == route.needs_key, route.path
        if route.needs_key:
            shape = "OpenAIErrorResponse" if route.openai else "ErrorResponse"
            assert operation["responses"]["401"]["content"]["application/json"]["schema"] == ref(shape)


def test_the_bounds_are_this_routers_limits(start_router):
    router = start_router("--max-stop-sequences", "2", "--max-top-n-tokens", "3", "--max-best-of", "3",
                          "--max-input-tokens", "40", "--max-client-batch-size", "2")
    doc = document(router.url)
    assert parameter_schema(doc, "stop")["maxItems"] == 2
    assert parameter_schema(doc, "top_n_tokens")["maximum"] == 3
    assert parameter_schema(doc, "best_of")["maximum"] == 3
    assert parameter_schema(doc, "truncate") | {"description": ""} == {
        "type": "integer", "minimum": 0, "exclusiveMinimum": True, "maximum": 40, "nullable": True,
        "description": ""}
    completion = doc["components"]["schemas"]["CompletionRequest"]["properties"]
    assert completion["prompt"]["oneOf"][1]["maxItems"] == 2
    assert completion["logprobs"]["maximum"] == 3


RANGED = ("temperature", "repetition_penalty", "frequency_penalty", "presence_penalty", "top_k", "top_p",
          "typical_p", "max_new_tokens", "top_n_tokens", "truncate")


def test_validation_draws_the_line_where_the_document_does(start_router):
    """Just inside each documented bound is accepted, just outside is a 422 naming the field."""
    router = start_router()
    doc = document(router.url)
    for name in RANGED:
        schema = parameter_schema(doc, name)
        step = 1 if schema["type"] == "integer" else 0.01
        for edge, direction, exclusive in (("minimum", 1, "exclusiveMinimum"), ("maximum", -1, "exclusiveMaximum")):
            if edge not in schema or abs(schema[edge]) >= 2**31 - 1:
                continue  # an integer kind's own limit: no request can cross it usefully
            inside = schema[edge] + direction * step if schema.get(exclusive) else schema[edge]
            outside = schema[edge] if schema.get(exclusive) else schema[edge] - direction * step
            assert _status(router.url, name, inside) == (200, ""), (name, inside)
            status, message = _status(router.url, name, outside)
            assert status == 422 and name in message, (name, outside, message)


def _status(url: str, name: str, value) -> tuple[int, str]:
    parameters = {name: value, "max_new_tokens": value if name == "max_new_tokens" else 2}
    if name in ("top_k", "top_p", "typical_p", "temperature"):
        parameters["do_sample"] = True
    status, _, body = request(url, "POST", "/generate", {"inputs": "hello world", "parameters": parameters})
    return status, json.loads(body).get("error", "")


def test_docs_page_renders_the_document_from_same_origin_files(start_router):
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make test-deps` (Debian package `chromium`)")
    from playwright.sync_api import sync_playwright

    from tests.playground.conftest import CHROMIUM_ARGS

    router = start_router()
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("request", lambda req: requested.append(req.url))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(router.url + "/docs")
            page.wait_for_selector("text=/generate_stream", timeout=30_000)
            assert page.locator(".opblock").count() == sum(len(ops) for ops in document(router.url)["paths"].values())
            assert errors == []
        finally:
            browser.close()
    assert requested and all(url.startswith(router.url + "/") for url in requested), requested
    assert router.url + "/api-doc/openapi.json" in requested
