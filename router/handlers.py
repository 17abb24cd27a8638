"""Thin HTTP handlers. Order per request, as in TGI: parse the body, stream-only checks,
take admission permits (429 at once when full), validate and tokenize, then run on a
shard. Everything that can fail before the first byte is a JSON error with
Content-Length; on a stream, a failure after the headers becomes one final error event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from importlib import metadata

from aiohttp import web

from router.errors import IncompleteGenerationStream, RequestBodyError, RouterError, Unhealthy
from router.inference import Timing
from router.metrics import CONTENT_TYPE, Metrics
from router.request_body import parse_json
from router.responses import dumps, generate_body, stream_event, timing_headers
from router.schemas import GenerateRequest, parse_generate
from router.shards import Shard
from router.sse import EventStream, with_keep_alive
from router.state import DRAIN, REQUEST_ID, STATE, RouterState
from router.validation import ValidRequest, check_before_admission
from router.wire import Finished

log = logging.getLogger(__name__)

# /info's `version` is the TGI release whose API this router speaks, not sluice's own
# version (`sluice_version`): clients gate features on it (LlamaIndex turns function
# calling off below TGI 2.0.1), and a 0.x would tell them this is an ancient TGI.
TGI_API_VERSION = "3.3.6"


async def generate(request: web.Request) -> web.StreamResponse:
    """POST /generate: one JSON object."""
    return await _generate(request, streaming=False)


async def generate_stream(request: web.Request) -> web.StreamResponse:
    """POST /generate_stream: server-sent events."""
    return await _generate(request, streaming=True)


async def compat_generate(request: web.Request) -> web.StreamResponse:
    """POST /: dispatch on `stream`; the non-stream answer is a one-element list."""
    return await _generate(request, streaming=None, as_list=True)


async def _generate(request: web.Request, *, streaming: bool | None, as_list: bool = False) -> web.StreamResponse:
    state = request.app[STATE]
    timing = Timing(start=time.perf_counter())
    with count_request(state.metrics):
        generate_request = parse_generate(await read_json(request))
        if generate_request.stream if streaming is None else streaming:
            return await _generate_sse(request, generate_request, timing)
        return await _generate_json(request, generate_request, timing, as_list)


async def _generate_json(request: web.Request, generate_request: GenerateRequest, timing: Timing,
                         as_list: bool) -> web.Response:
    state = request.app[STATE]
    num_sequences = check_before_admission(generate_request.parameters, state.limits, streaming=False)
    with state.admission.admit(num_sequences):
        valid = await validate(state, generate_request, timing)
        generations = await state.inference.generate(valid, request[REQUEST_ID], timing, num_sequences)
    timing.mark_end()
    finished = generations[0].finished
    record_success(state.metrics, request, timing, valid.input_length, finished.generated_tokens,
                   finished.finish_reason)
    body = generate_body(valid, generations)
    headers = {"x-compute-type": state.config.compute_type,
               **timing_headers(timing, valid, finished.generated_tokens)}
    return web.json_response([body] if as_list else body, headers=headers, dumps=dumps)


async def _generate_sse(request: web.Request, generate_request: GenerateRequest,
                        timing: Timing) -> web.StreamResponse:
    state = request.app[STATE]
    check_before_admission(generate_request.parameters, state.limits, streaming=True)
    with state.admission.admit(1):
        valid = await validate(state, generate_request, timing)
        with state.pool.lease(valid.num_kv_tokens) as shard:  # 424 (no shard) or 429 before any header
            stream = EventStream({"x-compute-type": state.config.compute_type,
                                  "x-compute-characters": str(len(valid.inputs))})
            await _send_events(request, stream, shard, valid, timing)
    return stream.response


async def _send_events(request: web.Request, stream: EventStream, shard: Shard, valid: ValidRequest,
                       timing: Timing) -> None:
    async def send_tokens() -> None:
        finished = await _forward_tokens(request, stream, shard, valid, timing)
        timing.mark_end()
        record_success(request.app[STATE].metrics, request, timing, valid.input_length,
                       finished.generated_tokens, finished.finish_reason)

    await send_stream(request, stream, send_tokens, RouterError.to_dict)


async def send_stream(request: web.Request, stream: EventStream, send_body: Callable[[], Awaitable[None]],
                      error_event: Callable[[RouterError], dict]) -> None:
    """Send the headers, then run `send_body`; errors from here on are one last event."""
    state = request.app[STATE]
    try:
        await stream.open(request)
        async with request.app[DRAIN].cut_off():  # a drain's end is one last error event
            await send_body()
    except ConnectionResetError:
        # The write failed because the client left; closing the token stream (in
        # send_body) has already cancelled the shard call.
        log.info("request_id=%s client disconnected", request[REQUEST_ID])
        state.metrics.record_failure("dropped")
    except Exception as exc:
        if not stream.response.prepared:
            raise  # no header sent yet: an ordinary error response
        # Past the headers, any failure (ours or a bug) is the stream's last event: a
        # second response written into the body would mis-frame the connection.
        err = exc if isinstance(exc, RouterError) else RouterError("Internal server error")
        if err is exc:
            log.warning("request_id=%s stream failed: %s", request[REQUEST_ID], err.message)
        else:
            log.exception("request_id=%s stream failed", request[REQUEST_ID])
        state.metrics.record_failure(err.failure_label)
        try:
            await stream.send(error_event(err))
        except ConnectionResetError:
            pass  # the client is gone too: nothing left to tell it


async def _forward_tokens(request: web.Request, stream: EventStream, shard: Shard, valid: ValidRequest,
                          timing: Timing) -> Finished:
    state = request.app[STATE]
    tokens = state.inference.stream(shard, valid, request[REQUEST_ID], timing)
    index = 0
    async with aclosing(with_keep_alive(tokens, state.config.keep_alive_interval_s)) as deltas:
        async for delta in deltas:
            if delta is None:
                await stream.keep_alive()
                continue
            index += 1
            await stream.send(stream_event(index, delta, valid))
            if delta.finished is not None:
                return delta.finished
    raise IncompleteGenerationStream()


async def validate(state: RouterState, generate_request: GenerateRequest, timing: Timing) -> ValidRequest:
    valid = await state.validator.validate(generate_request)
    state.metrics.record_validated(valid.input_length, valid.max_new_tokens, timing.mark_validated())
    return valid


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


def record_success(metrics: Metrics, request: web.Request, timing: Timing, input_length: int,
                   generated_tokens: int, finish_reason: str) -> None:
    metrics.record_success(total_s=timing.total_s, queue_s=timing.queue_s, inference_s=timing.inference_s,
                           generated_tokens=generated_tokens)
    log.info("request_id=%s %s input_length=%d generated_tokens=%d finish_reason=%s total_ms=%d",
             request[REQUEST_ID], request.path, input_length, generated_tokens, finish_reason,
             timing.total_s * 1000)


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


async def tokenize(request: web.Request) -> web.Response:
    """POST /tokenize: no parameter validation, as in TGI; unlike TGI it takes a permit and
    refuses prompts over --max-input-tokens, since its work grows with the text."""
    state = request.app[STATE]
    generate_request = parse_generate(await read_json(request))
    with state.admission.admit(1):
        body = await state.tokenizer.tokenize_json(generate_request.inputs, state.limits.max_input_tokens, dumps)
    return web.Response(body=body, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    """GET /health, / and /ping: 200 with an empty body while any shard is in rotation."""
    if not request.app[STATE].pool.any_healthy:
        raise Unhealthy()
    return web.Response(status=200)


async def info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config, limits, shard_info = state.config, state.limits, state.info
    return web.json_response({
        "model_id": state.model_id, "model_sha": None,
        # POST / defaults return_full_text to false, which is what this tag means to TGI.
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": config.max_concurrent_requests, "max_best_of": limits.max_best_of,
        "max_stop_sequences": limits.max_stop_sequences, "max_input_tokens": limits.max_input_tokens,
        "max_total_tokens": limits.max_total_tokens, "validation_workers": config.validation_workers,
        "max_client_batch_size": config.max_client_batch_size, "router": "sluice-router",
        "version": TGI_API_VERSION, "sluice_version": version(), "sha": None, "docker_label": None,
        "model_dtype": shard_info.dtype, "model_device_type": shard_info.device,
        "max_batch_total_tokens": shard_info.max_batch_total_tokens,
    }, dumps=dumps)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def version() -> str:
    try:
        return metadata.version("sluice")
    except metadata.PackageNotFoundError:
        return "0.0.0"
