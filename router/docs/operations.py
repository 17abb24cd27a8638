"""The OpenAPI document's building blocks for an operation: its summary, tag, success
content and the error responses it may give (each in the route's error shape)."""
from __future__ import annotations

from router.docs.bodies import ref

_ERROR_DESCRIPTIONS = {400: "Body is not JSON", 401: "Missing or wrong API key", 413: "Body too large",
                       415: "Content-Type is not JSON", 422: "Input validation error", 424: "Generation error",
                       429: "Model is overloaded, or no first token within the request's queue timeout", 500: "Incomplete generation",
                       503: "Shutting down (on health checks: also no healthy shard)",
                       504: "The request's deadline passed mid-answer (X-Request-Timeout)"}
_ERROR_DESCRIPTIONS.update({404: "No stored response (/v1/responses), no model (/v1/models) or no stream "
                                 "(/stream) has this id", 409: "The stream already has a reader",
                            410: "The events after Last-Event-ID are no longer kept"})


def errors(schema_name: str) -> dict[int, dict]:
    retry_after = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
    return {code: {"description": description, "content": {"application/json": {"schema": ref(schema_name)}},
                   **({"headers": retry_after} if code in (429, 503) else {})}
            for code, description in _ERROR_DESCRIPTIONS.items()}


def operation(summary: str, tag: str, *, ok: dict, body: str | None = None, errors: dict | None = None,
        codes: tuple[int, ...] = (400, 413, 415, 422, 424, 429, 500, 503, 504)) -> dict:
    content = {media_type: {"schema": schema} for media_type, schema in ok.items()}
    responses = {"200": {"description": "OK", **({"content": content} if content else {})}}
    for code in codes if errors else ():
        responses[str(code)] = errors[code]
    operation = {"summary": summary, "tags": [tag], "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    return operation
