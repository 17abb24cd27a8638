"""Schemathesis checks of our own (loaded with SCHEMATHESIS_HOOKS=tests.reliability.fuzz_checks),
beside its built-in ones: every error, before a stream or inside one, has TGI's JSON shape
(OpenAI's object on /v1), and every stream's events match the payload schemas the document
names in x-data-schema and end the way the route promises (the Responses API: typed,
numbered events ending with response.completed, .incomplete or .failed)."""
from __future__ import annotations

import json

import schemathesis
from openapi_schema_validator import OAS30Validator


def _validator(case, schema: dict) -> OAS30Validator:
    document = case.operation.schema.raw_schema
    return OAS30Validator({**schema, "components": document["components"]})


def _is_openai(case) -> bool:
    return case.path.startswith("/v1/")


def _is_responses(case) -> bool:
    return case.path == "/v1/responses"


def _check_responses_stream(events: list[dict], names: list[str]) -> None:
    """OpenAI's Responses stream: named events numbered from 0, no [DONE], one last event
    that ends the response, and nothing after a failure."""
    assert names == [event["type"] for event in events], (names, events[:3])
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed"), events[-1]
    assert all(event["type"] != "response.failed" for event in events[:-1]), "an event after a failure"


def _check_error_body(body: dict, openai: bool) -> None:
    if openai:
        assert set(body) == {"error", "error_type"} and isinstance(body["error_type"], str), body
        assert isinstance(body["error"], dict) and isinstance(body["error"].get("message"), str), body
    else:
        assert set(body) == {"error", "error_type"}, body
        assert all(isinstance(value, str) for value in body.values()), body


@schemathesis.check
def tgi_error_shape(ctx, response, case):
    """Any status >= 400: a JSON error body with Content-Length, in the route's shape."""
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    assert "content-length" in response.headers, response.headers
    _check_error_body(json.loads(response.content), _is_openai(case))
    return None


@schemathesis.check
def stream_events_conform(ctx, response, case):
    """An SSE body: each event's JSON matches the documented payloads; it ends with one final
    event (TGI: `generated_text` set; OpenAI: `[DONE]`), or with one error event and nothing after."""
    if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return None
    assert not response.stream_cut_short, "the stream did not end in time"
    operation = case.operation.schema.raw_schema["paths"][case.path][case.method.lower()]
    event_schema = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]
    validator = _validator(case, event_schema["x-data-schema"])
    payloads = [line[len("data: "):] for line in response.content.decode().split("\n") if line.startswith("data: ")]
    done = _is_openai(case) and payloads[-1:] == ["[DONE]"]
    events = [json.loads(payload) for payload in (payloads[:-1] if done else payloads)]
    assert events, response.content[:200]
    for event in events:
        validator.validate(event)
    if _is_responses(case):
        assert not done, "[DONE] on a Responses stream"
        names = [line[len("event: "):] for line in response.content.decode().split("\n") if line.startswith("event: ")]
        _check_responses_stream(events, names)
        return None
    last = events[-1]
    if "error" in last:
        assert not done, "[DONE] after an error"
        _check_error_body(last, _is_openai(case))
    else:
        assert done if _is_openai(case) else last["generated_text"] is not None, last
    assert all("error" not in event for event in events[:-1]), "an event after an error"
    return None


@schemathesis.check
def no_server_error(ctx, response, case):
    """schemathesis's not_a_server_error, but for the one 5xx a client asks for: a 504
    `deadline_exceeded` when its own request_timeout_s passed mid-answer."""
    if response.status_code < 500:
        return None
    asked = isinstance(case.body, dict) and isinstance(case.body.get("parameters"), dict) \
        and case.body["parameters"].get("request_timeout_s") is not None
    body = json.loads(response.content) if response.content else {}
    assert response.status_code == 504 and asked and body.get("error_type") == "deadline_exceeded", \
        (response.status_code, response.content[:300])
    return None
