"""The OpenAI-compatible routes: POST /v1/chat/completions, POST /v1/completions and
GET /v1/models. Same lifecycle as TGI's routes (router/lifecycle.py): parse, checks that
need no tokenizer, admission permits (429 at once; one per prompt), render and validate,
then run on the shards. Errors use the OpenAI body (errors.RouterError.to_openai_dict)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from aiohttp import web

from router.chat_template import ChatTemplate
from router.errors import ModelNotFound, RouterError
from router.inference import Timing
from router.json_body import dumps
from router.lifecycle import admit, count_request, request_timing, read_json, record_success, send_stream, timing_headers, validate, version
from router.openai.answers import (Answer, ChatFormat, CompletionFormat, Format, echoed, finish_reason, models_json,
                                   num_prompt_tokens, usage_json)
from router.openai.schemas import (ChatRequest, OpenAIParameters, check_before_admission, parse_chat, parse_completion,
                                   to_generate_parameters)
from router.openai.stream import send_choices
from router.openai.tool_prompt import prompt_inputs
from router.openai.tool_stream import ToolCallOutput
from router.schemas import GenerateParameters, GenerateRequest
from router.sse import EventStream
from router.state import REQUEST_ID, STATE
from router.stops import cut_at_stop, stop_floor
from router.validation import ValidRequest


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    started_at = time.perf_counter()
    with count_request(state.metrics):
        timing = request_timing(request, started_at)
        chat = parse_chat(await read_json(request))
        num_choices = chat.parameters.n or 1
        check_before_admission(chat.parameters, state.limits, max_num_choices=state.config.max_client_batch_size)
        with admit(state, timing, num_choices):
            prompt = await asyncio.to_thread(_render, state.chat_template, chat)
            # The template wrote the special tokens already: no BOS on top (as TGI).
            generate_request = GenerateRequest(prompt, to_generate_parameters(chat.parameters),
                                               add_special_tokens=False)
            valids = choices(await validate(state, generate_request, timing), num_choices)
            tool_outputs = None if chat.tools is None else [ToolCallOutput() for _ in valids]
            return await _answer(request, ChatFormat, chat.parameters, valids, timing, tool_outputs)


def _render(template: ChatTemplate, chat: ChatRequest) -> str:
    """The prompt, tools and earlier calls included (in a worker thread: it grows with them)."""
    return template.render(*prompt_inputs(template, list(chat.messages), chat.tools))


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    started_at = time.perf_counter()
    with count_request(state.metrics):
        timing = request_timing(request, started_at)
        completion = parse_completion(await read_json(request))
        params = completion.parameters
        check_before_admission(params, state.limits, num_prompts=len(completion.prompts),
                               max_num_choices=state.config.max_client_batch_size, logprobs_name="logprobs")
        num_choices = params.n or 1
        with admit(state, timing, len(completion.prompts) * num_choices):
            generate_parameters = to_generate_parameters(params)
            valids = [choice for prompt in completion.prompts
                      for choice in choices(await validate(state, _generate_request(prompt, generate_parameters),
                                                           timing), num_choices)]
            return await _answer(request, CompletionFormat, params, valids, timing)


def _generate_request(prompt: str | tuple[int, ...], parameters: GenerateParameters) -> GenerateRequest:
    if isinstance(prompt, str):
        return GenerateRequest(prompt, parameters)
    return GenerateRequest("", parameters, input_ids=prompt)


def choices(valid: ValidRequest, n: int) -> list[ValidRequest]:
    """A prompt's n choices (OpenAI's order: a prompt's choices together). A seeded request's
    choice j samples with seed + j, so the choices differ and the answer repeats."""
    seed = valid.parameters.seed
    if n == 1 or seed is None or not valid.parameters.do_sample:
        return [valid] * n
    return [dataclasses.replace(valid, parameters=dataclasses.replace(valid.parameters, seed=(seed + j) % 2**64))
            for j in range(n)]


async def models(request: web.Request) -> web.Response:
    return web.json_response(models_json(request.app[STATE].model_id), dumps=dumps)


async def model(request: web.Request) -> web.Response:
    """GET /v1/models/{model_id}: the served model, or 404 (its id may hold a `/`)."""
    served = models_json(request.app[STATE].model_id)["data"][0]
    if request.match_info["model_id"] != served["id"]:
        raise ModelNotFound(request.match_info["model_id"])
    return web.json_response(served, dumps=dumps)


async def chat_tokenize(request: web.Request) -> web.Response:
    """TGI's POST /chat_tokenize: a chat body's prompt as the template renders it (tools
    included) and its tokens, without generating. TGI's error shape; admitted, since
    rendering and tokenizing grow with the messages."""
    state = request.app[STATE]
    chat = parse_chat(await read_json(request))
    with state.admission.admit(1):
        prompt = await asyncio.to_thread(_render, state.chat_template, chat)
        tokens = await state.tokenizer.tokenize_json(prompt, state.limits.max_input_tokens, dumps,
                                                     add_special_tokens=False)
    body = b'{"tokenize_response":' + tokens + b',"templated_text":' + dumps(prompt).encode("utf-8") + b"}"
    return web.Response(body=body, content_type="application/json")


async def _answer(request: web.Request, output_format: type[Format], params: OpenAIParameters, valids: list[ValidRequest],
                  timing: Timing, tool_outputs: list[ToolCallOutput] | None = None) -> web.StreamResponse:
    """`tool_outputs`: one per choice, when the answer may call a tool."""
    answer = Answer.start(output_format, request.app[STATE].model_id, version())
    if params.stream:
        return await _answer_sse(request, answer, params, valids, timing, tool_outputs)
    return await _answer_json(request, answer, params, valids, timing, tool_outputs)


async def _answer_json(request: web.Request, answer: Answer, params: OpenAIParameters, valids: list[ValidRequest],
                       timing: Timing, tool_outputs: list[ToolCallOutput] | None) -> web.Response:
    state = request.app[STATE]
    generations = await state.inference.generate_each(valids, request[REQUEST_ID], timing)
    timing.mark_end()
    choices = []
    for index, (valid, generation) in enumerate(zip(valids, generations)):
        logprobs = None
        if params.num_top_logprobs is not None:
            logprobs = answer.format.logprobs(generation.tokens, generation.top_tokens, 0)
        text = cut_at_stop(generation.finished.text, valid.parameters.stop,
                           stop_floor(generation.tokens, valid.parameters.min_new_tokens))
        if params.echo:
            text, logprobs = echoed(valid, generation, text, params)
        if tool_outputs is None:
            choices.append(answer.format.choice(index, text, finish_reason(generation.finished), logprobs))
        else:
            output = tool_outputs[index]
            message = output.message(text)  # first: it reads the call, which the finish reason needs
            choices.append(ChatFormat.message_choice(index, message, output.finish_reason(generation.finished),
                                                     logprobs))
    prompt_tokens = num_prompt_tokens(valids, params.n)
    num_generated = 0 if params.max_tokens == 0 else sum(g.finished.generated_tokens for g in generations)
    record_success(state.metrics, request, timing, prompt_tokens, num_generated,
                   generations[0].finished.finish_reason)
    headers = {"x-compute-type": state.config.compute_type}
    if len(valids) == 1:  # TGI's timing headers describe one generation
        headers.update(timing_headers(timing, valids[0], num_generated))
    body = answer.body(choices, usage_json(prompt_tokens, num_generated))
    return web.json_response(body, headers=headers, dumps=dumps)


async def _answer_sse(request: web.Request, answer: Answer, params: OpenAIParameters, valids: list[ValidRequest],
                      timing: Timing, tool_outputs: list[ToolCallOutput] | None) -> web.StreamResponse:
    state = request.app[STATE]
    with state.inference.lease(valids, request[REQUEST_ID], timing) as run:  # 424 or 429 before any header
        stream = EventStream({"x-compute-type": state.config.compute_type,
                              "x-compute-characters": str(sum(len(valid.inputs) for valid in valids))})

        async def send_tokens() -> None:
            ends = await send_choices(request, stream, answer, params, run, tool_outputs)
            timing.mark_end()
            record_success(state.metrics, request, timing, num_prompt_tokens(valids, params.n),
                           sum(end.generated_tokens for end in ends), ends[0].finish_reason)

        # An error after the headers is one last OpenAI-shaped event, and no [DONE] after it.
        await send_stream(request, stream, send_tokens, RouterError.to_openai_dict, timing)
    return stream.response
