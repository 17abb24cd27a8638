"""POST /v1/responses, GET and DELETE /v1/responses/{response_id}, and GET
/v1/responses/{response_id}/input_items (input_items.py). Creating one takes chat's
path (router/openai/handlers.py): parse, checks that need no tokenizer (the stored
conversation of `previous_response_id` too, 404 before any permit), an admission permit
(429 at once), render the items as chat messages in a worker thread, validate, lease a
shard (424/429 before any header), then run. A finished response is stored before its
last event is sent, so a client that reads it can GET it or continue from it at once."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

from aiohttp import web

from router.chat_template import ChatTemplate
from router.errors import IncompleteGenerationStream, InvalidParameter, ResponseNotFound
from router.inference import ShardRun, Timing
from router.json_body import dumps
from router.lifecycle import admit, count_request, request_timing, read_json, record_success, relay, send_stream, timing_headers, validate
from router.openai.responses.events import ResponseDraft, ResponseEventStream, final_event, lifecycle_event
from router.openai.responses.input_items import page, parse_page_query, with_ids
from router.openai.responses.items import Item, parse_items, to_messages
from router.openai.responses.output import OutputAssembler
from router.openai.responses.schemas import ResponsesRequest, parse_responses
from router.openai.responses.store import RESPONSE_STORE, ResponseStore
from router.openai.schemas import to_generate_parameters
from router.openai.tool_prompt import prompt_inputs
from router.openai.tool_stream import ToolCallOutput
from router.schemas import GenerateRequest
from router.state import REQUEST_ID, STATE
from router.stops import StopTrimmer, cut_at_stop, stop_floor
from router.validation import ValidRequest
from router.wire import Finished


async def create_response(request: web.Request) -> web.StreamResponse:
    state, store = request.app[STATE], request.app[RESPONSE_STORE]
    started_at = time.perf_counter()
    with count_request(state.metrics):
        timing = request_timing(request, started_at)
        parsed = parse_responses(await read_json(request))
        items = _history(store, parsed.previous_response_id) + parsed.items
        with admit(state, timing, 1):
            prompt = await asyncio.to_thread(_render, state.chat_template, items, parsed)
            # The template wrote the special tokens already: no BOS on top (as chat).
            generate_request = GenerateRequest(prompt, to_generate_parameters(parsed.parameters),
                                               add_special_tokens=False)
            valid = await validate(state, generate_request, timing)
            output = OutputAssembler(None if parsed.tools is None else ToolCallOutput())
            draft = ResponseDraft(parsed, state.model_id, output, stored=parsed.store and store.enabled)
            if parsed.parameters.stream:
                return await _answer_sse(request, draft, items, valid, timing)
            return await _answer_json(request, draft, items, valid, timing)


async def retrieve_response(request: web.Request) -> web.Response:
    if request.query.get("stream", "false").lower() not in ("false", "0"):
        raise InvalidParameter("stream", "`stream` is not supported when retrieving a response: it is returned "
                                         "whole, once finished")
    response_id = request.match_info["response_id"]
    stored = request.app[RESPONSE_STORE].get(response_id)
    if stored is None:
        raise ResponseNotFound(response_id)
    return web.json_response(stored.response, dumps=dumps)


async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    if not request.app[RESPONSE_STORE].delete(response_id):
        raise ResponseNotFound(response_id)
    return web.json_response({"id": response_id, "object": "response", "deleted": True}, dumps=dumps)


async def list_input_items(request: web.Request) -> web.Response:
    query = parse_page_query(request.query)
    response_id = request.match_info["response_id"]
    stored = request.app[RESPONSE_STORE].get(response_id)
    if stored is None:
        raise ResponseNotFound(response_id)
    return web.json_response(page(stored.input_items, query), dumps=dumps)


def _history(store: ResponseStore, previous_response_id: str | None) -> tuple[Item, ...]:
    """The conversation a follow-up continues: the stored response's input, then its output
    (its instructions are not carried over, as OpenAI does)."""
    if previous_response_id is None:
        return ()
    stored = store.get(previous_response_id)
    if stored is None:
        raise ResponseNotFound(previous_response_id, param="previous_response_id")
    return stored.input_items + parse_items("output", stored.response["output"])


def _render(template: ChatTemplate, items: tuple[Item, ...], parsed: ResponsesRequest) -> str:
    """The prompt, tools and earlier calls included (in a worker thread: it grows with them)."""
    return template.render(*prompt_inputs(template, to_messages(items, parsed.instructions), parsed.tools))


def _keep(request: web.Request, response: dict, items: tuple[Item, ...]) -> None:
    """Store a finished response (unless `store` is false or the store is off) with the
    input items of its whole conversation, each with an id (for GET .../input_items). One
    too big for the store's byte bound is not kept, and says so: `store` false."""
    if response["store"] and not request.app[RESPONSE_STORE].put(response, with_ids(items)):
        response["store"] = False


async def _answer_json(request: web.Request, draft: ResponseDraft, items: tuple[Item, ...], valid: ValidRequest,
                       timing: Timing) -> web.Response:
    state = request.app[STATE]
    [generation] = await state.inference.generate_each([valid], request[REQUEST_ID], timing)
    timing.mark_end()
    finished = generation.finished
    stop, min_tokens = valid.parameters.stop, valid.parameters.min_new_tokens
    draft.output.push(cut_at_stop(finished.text, stop, stop_floor(generation.tokens, min_tokens)), final=True)
    draft.output.finish(finished)
    response = draft.finished(finished, valid.input_length)
    _keep(request, response, items)
    record_success(state.metrics, request, timing, valid.input_length, finished.generated_tokens,
                   finished.finish_reason)
    headers = {"x-compute-type": state.config.compute_type,
               **timing_headers(timing, valid, finished.generated_tokens)}
    return web.json_response(response, headers=headers, dumps=dumps)


async def _answer_sse(request: web.Request, draft: ResponseDraft, items: tuple[Item, ...], valid: ValidRequest,
                      timing: Timing) -> web.StreamResponse:
    state = request.app[STATE]
    with state.inference.lease([valid], request[REQUEST_ID], timing) as run:  # 424 or 429 before any header
        stream = ResponseEventStream({"x-compute-type": state.config.compute_type,
                                      "x-compute-characters": str(len(valid.inputs))})

        async def send_events() -> None:
            finished = await _send_response(request, stream, draft, run, items)
            timing.mark_end()
            record_success(state.metrics, request, timing, valid.input_length, finished.generated_tokens,
                           finished.finish_reason)

        # An error after the headers is one last event, response.failed, with the output so far.
        await send_stream(request, stream, send_events, draft.failed_event, timing)
    return stream.response


async def _send_response(request: web.Request, stream: ResponseEventStream, draft: ResponseDraft, run: ShardRun,
                         items: tuple[Item, ...]) -> Finished:
    """Every event of the response, one output event per token; returns how it ended."""
    await stream.send(lifecycle_event("created", draft.snapshot()))
    await stream.send(lifecycle_event("in_progress", draft.snapshot()))
    finished = None
    parameters = run.valids[0].parameters
    trimmer = StopTrimmer(parameters.stop, parameters.min_new_tokens)  # no stop string is sent
    async with run.tokens() as tokens, aclosing(relay(request, stream, tokens)) as deltas:
        async for _, delta in deltas:
            # Special tokens (EOS, chat markers) are not part of the answer.
            text = trimmer.push("" if delta.token.special else delta.token.text, final=delta.finished is not None)
            for event in draft.output.push(text, final=delta.finished is not None):
                await stream.send(event)
            if delta.finished is not None:
                finished = delta.finished
                break
    if finished is None:
        raise IncompleteGenerationStream()
    for event in draft.output.finish(finished):
        await stream.send(event)
    response = draft.finished(finished, run.valids[0].input_length)
    _keep(request, response, items)
    await stream.send(final_event(response))
    return finished
