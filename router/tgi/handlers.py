"""TGI's routes: /generate, /generate_stream, POST /, /tokenize, /health, /info and
/metrics. Order per request, as in TGI: parse the body, stream-only checks, take
admission permits (429 at once when full), validate and tokenize, then run on a shard
(lease before any header). Everything that can fail before the first byte is a JSON error with
Content-Length; on a stream, a failure after the headers becomes one final error event."""

from __future__ import annotations

import logging
import time
from contextlib import aclosing

from aiohttp import web

from router.errors import IncompleteGenerationStream, RouterError, Unhealthy
from router.inference import ShardRun, Timing
from router.json_body import dumps
from router.lifecycle import admit, count_request, request_timing, read_json, record_success, relay, send_stream, timing_headers, validate, version
from router.metrics import CONTENT_TYPE
from router.schemas import GRAMMAR_TYPES, GenerateRequest, parse_generate
from router.sse import EventStream
from router.state import REQUEST_ID, STATE
from router.tgi.answers import generate_body, stream_event
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
    started_at = time.perf_counter()
    with count_request(state.metrics):
        timing = request_timing(request, started_at)
        generate_request = parse_generate(await read_json(request))
        if generate_request.stream if streaming is None else streaming:
            return await _generate_sse(request, generate_request, timing)
        return await _generate_json(request, generate_request, timing, as_list)


async def _generate_json(request: web.Request, generate_request: GenerateRequest, timing: Timing,
                         as_list: bool) -> web.Response:
    state = request.app[STATE]
    num_sequences = check_before_admission(generate_request.parameters, state.limits, streaming=False)
    with admit(state, timing, num_sequences, generate_request.parameters.priority):
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
    with admit(state, timing, 1, generate_request.parameters.priority):
        valid = await validate(state, generate_request, timing)
        with state.inference.lease([valid], request[REQUEST_ID], timing) as run:  # 424 or 429 before any header
            stream = EventStream({"x-compute-type": state.config.compute_type,
                                  "x-compute-characters": str(len(valid.inputs))})

            async def send_tokens() -> None:
                finished = await _send_events(request, stream, run, valid)
                timing.mark_end()
                record_success(state.metrics, request, timing, valid.input_length,
                               finished.generated_tokens, finished.finish_reason)

            await send_stream(request, stream, send_tokens, RouterError.to_dict, timing)
    return stream.response


async def _send_events(request: web.Request, stream: EventStream, run: ShardRun, valid: ValidRequest) -> Finished:
    async with run.tokens() as tokens, aclosing(relay(request, stream, tokens)) as deltas:
        index = 0
        async for _, delta in deltas:
            index += 1
            await stream.send(stream_event(index, delta, valid))
            if delta.finished is not None:
                return delta.finished
    raise IncompleteGenerationStream()


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
        # sluice's own, after TGI's fields: what `parameters.grammar` takes.
        "grammar_types": list(GRAMMAR_TYPES), "max_grammar_length": limits.max_grammar_length,
    }, dumps=dumps)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].metrics.render(), headers={"Content-Type": CONTENT_TYPE})

