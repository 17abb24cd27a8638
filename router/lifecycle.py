"""The steps every generation route takes, whichever dialect it speaks (tgi/, openai/):
read the JSON body, count the request and its failure, validate, send a stream whose
failures after the headers become its last event, and record a success. Handlers compose
these; the dialects differ only in their bodies and error shapes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib import metadata

from aiohttp import web

from router import deadlines, priorities
from router.errors import RequestBodyError, RouterError
from router.inference import Timing
from router.json_body import parse_json
from router.metrics import Metrics
from router.resume import RESUMABLE_STREAMS, Recording, pump
from router.schemas import GenerateRequest
from router.sse import EventStream
from router.state import REQUEST_ID, STATE, RouterState
from router.validation import ValidRequest

log = logging.getLogger(__name__)


async def read_json(request: web.Request) -> object:
    config = request.app[STATE].config
    limit = config.payload_limit
    too_large = RequestBodyError(413, "Failed to buffer the request body: length limit exceeded")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    content_type = request.content_type
    if not (content_type == "application/json" or content_type.endswith("+json")):
        raise RequestBodyError(415, "Expected request with `Content-Type: application/json`")
    try:
        async with asyncio.timeout(config.request_body_timeout_s):  # a trickled body holds a socket
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    except web.RequestPayloadError as exc:  # e.g. `Content-Encoding: gzip` on a body that is not
        detail = " ".join(str(exc).split()).removeprefix("400, message: ")
        request.content.feed_eof()  # nothing more to read: aiohttp would re-raise it draining the body
        raise RequestBodyError(400, f"Failed to read the request body: {detail}", close_connection=True) from None
    except TimeoutError:
        raise RequestBodyError(408, "Failed to buffer the request body: timed out after "
                                    f"{config.request_body_timeout_s:g} s", close_connection=True) from None
    return await asyncio.to_thread(parse_json, raw)


@contextmanager
def count_request(metrics: Metrics) -> Iterator[None]:
    """Count the request, and its failure (if any) under TGI's `err` label. Failures after
    a stream's headers are counted where they are turned into events (send_stream)."""
    metrics.request_count.inc()
    try:
        yield
    except RouterError as err:
        metrics.record_failure(err.failure_label)
        raise
    except asyncio.CancelledError:
        # handler_cancellation: the client went away, and the cancellation has already
        # closed its gRPC stream on the way out.
        metrics.record_failure("dropped")
        raise
    except Exception:
        metrics.record_failure("internal")  # answered as a 500 by the error middleware
        raise


def request_timing(request: web.Request, started_at: float) -> Timing:
    """The request's clock, and its deadlines as its headers and the flags set them."""
    config = request.app[STATE].config
    return Timing(start=started_at, priority=priorities.from_headers(request.headers),
                  deadlines=deadlines.from_headers(request.headers, config.default_deadlines,
                                                   config.max_request_timeout_s))


def admit(state: RouterState, timing: Timing, num_requests: int, asked_priority: str | None = None):
    """Admission permits for a generation, in its priority class (a body's over the header's),
    counted by class and outcome; 429 at once when they are not there."""
    timing.priority = asked_priority or timing.priority
    outcome = "admitted" if state.admission.fits(num_requests, timing.priority) else "rejected"
    state.metrics.priority_requests.labels(priority=timing.priority, outcome=outcome).inc()
    return state.admission.admit(num_requests, timing.priority)


async def validate(state: RouterState, generate_request: GenerateRequest, timing: Timing) -> ValidRequest:
    """Also narrows the deadlines by TGI's parameters, which win over the headers."""
    params = generate_request.parameters
    timing.deadlines = timing.deadlines.narrowed(params.request_timeout_s, params.queue_timeout_s,
                                                 state.config.max_request_timeout_s)
    with state.tracer.start_as_current_span("validate"):
        valid = await state.validator.validate(generate_request)
    state.metrics.record_validated(valid.input_length, valid.max_new_tokens, timing.mark_validated())
    return valid


async def send_stream(request: web.Request, stream: EventStream, send_body: Callable[[], Awaitable[None]],
                      error_event: Callable[[RouterError], dict], timing: Timing) -> None:
    """Send the headers, then run `send_body`; errors from here on are one last event. With
    a queue deadline the headers wait for the first event (or keep-alive), so that a queue
    timeout can still be a 429 with Retry-After. With resumable streams on, see
    _send_resumable."""
    if request.app[RESUMABLE_STREAMS].enabled:
        return await _send_resumable(request, stream, send_body, error_event)
    try:
        await stream.open(request, deferred=timing.deadlines.queue_s is not None)
        await send_body()
    except ConnectionResetError:
        # The write failed because the client left; closing the token stream (in
        # send_body) has already cancelled the shard call.
        log.info("request_id=%s client disconnected", request[REQUEST_ID])
        request.app[STATE].metrics.record_failure("dropped")
    except Exception as exc:
        if not stream.response.prepared:
            raise  # no header sent yet: an ordinary error response
        await _last_event(request, stream, exc, error_event)


async def _last_event(request: web.Request, stream: EventStream, exc: Exception,
                      error_event: Callable[[RouterError], dict]) -> None:
    """Past the headers, any failure (ours or a bug) is the stream's last event: a second
    response written into the body would mis-frame the connection."""
    err = exc if isinstance(exc, RouterError) else RouterError("Internal server error")
    if err is exc:
        log.warning("request_id=%s stream failed: %s", request[REQUEST_ID], err.message)
    else:
        log.exception("request_id=%s stream failed", request[REQUEST_ID], exc_info=exc)
    request.app[STATE].metrics.record_failure(err.failure_label)
    try:
        await stream.send(error_event(err))
    except ConnectionResetError:
        pass  # the client is gone too: nothing left to tell it


async def _send_resumable(request: web.Request, stream: EventStream, send_body: Callable[[], Awaitable[None]],
                          error_event: Callable[[RouterError], dict]) -> None:
    """The generation runs in a task of its own, recording its events (router/resume.py);
    this handler only reads them out. If the client goes, the task goes on for a resume,
    and is cancelled (its shard call too) once nobody has read it for the window."""
    streams = request.app[RESUMABLE_STREAMS]
    recording = streams.open()
    stream.response.headers["X-Resume-Token"] = recording.token
    await stream.open(request, deferred=True)
    stream.recording = recording

    async def record() -> None:
        try:
            await send_body()
        except Exception as exc:
            if not recording.frames:
                raise  # nothing sent: an ordinary error response
            await _last_event(request, stream, exc, error_event)
        finally:
            recording.finish()

    body = asyncio.create_task(record())
    recording.has_reader = True
    try:
        await pump(recording, stream.response, request, 0)
    except (asyncio.CancelledError, ConnectionResetError):
        asyncio.current_task().uncancel()   # the client's hang-up: not this generation's end
        recording.has_reader = False
        await _outlive_client(request, recording, body, streams.window_s)
    except BaseException:
        body.cancel()   # never a generation nobody owns
        raise
    finally:
        recording.has_reader = False
        if recording.finished:
            streams.forget_later(recording)
    await body   # its error when it failed before any event; CancelledError when not resumed


async def _outlive_client(request: web.Request, recording: Recording, body: asyncio.Task,
                          window_s: float) -> None:
    unread_since = time.monotonic()
    while not body.done():
        try:
            await asyncio.wait({body}, timeout=min(0.25, window_s))
        except asyncio.CancelledError:   # the router is stopping: so does the generation
            body.cancel()
            raise
        if recording.has_reader:
            unread_since = time.monotonic()
        elif time.monotonic() - unread_since > window_s:
            log.info("request_id=%s not resumed within %g s: cancelled", request[REQUEST_ID], window_s)
            body.cancel()   # count_request counts it as dropped
            await asyncio.wait({body})
    request.app[RESUMABLE_STREAMS].forget_later(recording)


def relay(request: web.Request, stream: EventStream, tokens: AsyncIterator) -> AsyncIterator:
    """`tokens`' items, with a keep-alive comment sent on `stream` after each of the
    router's keep-alive intervals of silence. Close it (aclosing) when leaving early."""
    return stream.relay(tokens, request.app[STATE].config.keep_alive_interval_s)


def record_success(metrics: Metrics, request: web.Request, timing: Timing, input_length: int,
                   generated_tokens: int, finish_reason: str) -> None:
    metrics.record_success(total_s=timing.total_s, queue_s=timing.queue_s, inference_s=timing.inference_s,
                           generated_tokens=generated_tokens)
    log.info("request_id=%s %s input_length=%d generated_tokens=%d finish_reason=%s total_ms=%d",
             request[REQUEST_ID], request.path, input_length, generated_tokens, finish_reason,
             timing.total_s * 1000)


def timing_headers(timing: Timing, valid: ValidRequest, generated_tokens: int) -> dict[str, str]:
    """TGI's x-* timing headers for non-streaming answers (times in ms, compute time in s);
    the OpenAI routes send them too, as TGI does."""
    inference_ms = int(timing.inference_s * 1000)
    return {
        "x-compute-time": repr(timing.total_s),
        "x-compute-characters": str(len(valid.inputs)),
        "x-total-time": str(int(timing.total_s * 1000)),
        "x-validation-time": str(int(timing.validation_s * 1000)),
        "x-queue-time": str(int(timing.queue_s * 1000)),
        "x-inference-time": str(inference_ms),
        "x-time-per-token": str(inference_ms // generated_tokens if generated_tokens else 0),
        "x-prompt-tokens": str(valid.input_length),
        "x-generated-tokens": str(generated_tokens),
    }


def version() -> str:
    """sluice's own version (the installed package's)."""
    try:
        return metadata.version("sluice")
    except metadata.PackageNotFoundError:
        return "0.0.0"
