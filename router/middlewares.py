"""Request id, tracing, API key and error middlewares, each doing one thing. The first in the list
is the outermost, so the error middleware also answers the auth middleware's 401."""

from __future__ import annotations

import hmac
import logging
import re
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from router.errors import HTTPError, RouterError, Unauthorized
from router.json_body import dumps
from router.route_table import RouteTable
from router.state import REQUEST_ID
from router.tracing import Tracing

log = logging.getLogger(__name__)

# A client-supplied id is echoed into logs and headers, so only plain ones are trusted.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    client_id = request.headers.get("x-request-id", "")
    request[REQUEST_ID] = client_id if _CLIENT_REQUEST_ID.fullmatch(client_id) else uuid.uuid4().hex
    return await handler(request)


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: streams send their headers before a middleware could."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["x-request-id"] = request_id


def tracing_middleware(tracing: Tracing):
    @web.middleware
    async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST":   # probes and scrapes: no spans
            return await handler(request)
        context = propagate.extract(request.headers)
        with tracing.tracer.start_as_current_span(f"{request.method} {request.path}", context=context,
                                                  kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("url.path", request.path)
            span.set_attribute("sluice.request_id", request.get(REQUEST_ID, ""))
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    return trace_request


def error_middleware(routes: RouteTable):
    @web.middleware
    async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RouterError as err:
            log.info("request_id=%s %s %s -> %d %s", request.get(REQUEST_ID), request.method, request.path,
                     err.status, err.message)
            return error_response(err, openai=routes.speaks_openai(request))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # aiohttp's own answers (unknown path, wrong method): the same JSON shape too.
            err = HTTPError(exc.status, exc.reason, {k: v for k, v in exc.headers.items() if k == "Allow"})
            return error_response(err, openai=routes.speaks_openai(request))
        except Exception:
            log.exception("request_id=%s %s %s failed", request.get(REQUEST_ID), request.method, request.path)
            if request.writer.output_size > 0:
                raise  # a response is under way: aiohttp closes the connection, no second response
            return error_response(RouterError("Internal server error"), openai=routes.speaks_openai(request))

    return answer_errors


def error_response(err: RouterError, openai: bool = False) -> web.Response:
    # A normal (non-chunked) JSON body, so Content-Length is always set: huggingface_hub's
    # async client only reads `error_type` from error bodies that have one.
    body = err.to_openai_dict() if openai else err.to_dict()
    response = web.json_response(body, status=err.status, headers=err.headers, dumps=dumps)
    if err.close_connection:
        response.force_close()
    return response


def auth_middleware(api_key: str | None, routes: RouteTable):
    expected = f"bearer {api_key}".lower().encode() if api_key else None

    @web.middleware
    async def check_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = routes.find(request)
        if expected is not None and route is not None and route.needs_key:
            # TGI compares the whole header case-insensitively with "Bearer <key>".
            # aiohttp keeps a header's non-UTF-8 bytes as surrogates: compare the bytes sent.
            given = request.headers.get("Authorization", "").lower().encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                raise Unauthorized()
        return await handler(request)

    return check_api_key
