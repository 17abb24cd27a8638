"""The OpenAPI entry of GET /stream/{token} (router/resume.py)."""
from __future__ import annotations

from router.docs.bodies import sse_event


def resume_paths(op, errors: dict) -> dict:
    summary = ("Resume a dropped stream (with --stream-resume-window-s): the events after Last-Event-ID, "
               "then the rest live. The token is the stream's X-Resume-Token header")
    operation = op(summary, "Text Generation", errors=errors, codes=(404, 409, 410, 422),
                   ok={"text/event-stream": sse_event("StreamResponse", "ErrorResponse")})
    operation["parameters"] = [
        {"name": "token", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}},
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "schema": {"type": "integer", "minimum": 0}, "description": "The last event id read (default 0)"},
        {"name": "last_event_id", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
         "description": "The same, for clients that cannot set headers"},
    ]
    return {"/stream/{token}": {"get": operation}}
