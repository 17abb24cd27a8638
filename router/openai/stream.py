"""Writing OpenAI streams: each shard token becomes one chunk of its choice, with stop
strings held back (stops.py); then, when asked, a usage chunk; then `data: [DONE]`.
Several prompts (/v1/completions with a list) stream at once, their chunks interleaved
and told apart by `index`, as OpenAI and TGI do."""

from __future__ import annotations

from contextlib import aclosing

from aiohttp import web

from router.errors import IncompleteGenerationStream
from router.inference import ShardRun
from router.lifecycle import relay
from router.openai.answers import Answer, ChatFormat, finish_reason, num_prompt_tokens, usage_json
from router.openai.schemas import OpenAIParameters
from router.openai.tool_stream import ToolCallOutput
from router.sse import EventStream
from router.stops import StopTrimmer
from router.wire import Finished, TokenDelta


class ChoiceStream:
    """One choice's chunks. With `tool_output` (a chat answer that may call a tool), the
    text goes through it and comes out as tool-call deltas."""

    def __init__(self, index: int, answer: Answer, params: OpenAIParameters,
                 tool_output: ToolCallOutput | None = None) -> None:
        self._index = index
        self._answer = answer
        self._with_logprobs = params.num_top_logprobs is not None
        self._trimmer = StopTrimmer(params.stop, params.min_tokens)
        self._text_offset = 0  # where this token starts in the generated text (legacy logprobs)
        self._tool_output = tool_output

    def chunks(self, delta: TokenDelta) -> list[dict]:
        """This token's chunks: one, or with a tool call, one per delta it makes (the name's
        delta apart from the first arguments); its logprobs ride on the first."""
        token, finished = delta.token, delta.finished
        # Special tokens (EOS, chat markers) are not part of the answer.
        token_text = "" if token.special else token.text
        text = self._trimmer.push(token_text, final=finished is not None)
        reason = None if finished is None else finish_reason(finished)
        output_format = self._answer.format
        logprobs = None
        if self._with_logprobs:
            logprobs = output_format.logprobs([token], [delta.top_tokens], self._text_offset)
        self._text_offset += len(token_text)
        if self._tool_output is not None:
            return self._tool_chunks(text, finished, logprobs)
        choice = output_format.chunk_choice(self._index, text, reason, logprobs)
        return [{**self._answer.body([choice], None, chunk=True), **output_format.chunk_extras(token, text)}]

    def _tool_chunks(self, text: str, finished: Finished | None, logprobs: dict | None) -> list[dict]:
        deltas = self._tool_output.deltas(text, final=finished is not None) or [{}]
        reason = None if finished is None else self._tool_output.finish_reason(finished)
        last = len(deltas) - 1
        return [self._answer.body([ChatFormat.delta_choice(self._index, delta, reason if number == last else None,
                                                           logprobs if number == 0 else None)], None, chunk=True)
                for number, delta in enumerate(deltas)]


async def send_choices(request: web.Request, stream: EventStream, answer: Answer, params: OpenAIParameters,
                       run: ShardRun, tool_outputs: list[ToolCallOutput] | None = None) -> list[Finished]:
    """Send every choice's chunks, the usage chunk and [DONE]; returns each choice's end."""
    valids = run.valids
    outputs = tool_outputs or [None] * len(valids)
    choices = [ChoiceStream(index, answer, params, outputs[index]) for index in range(len(valids))]
    finished: list[Finished | None] = [None] * len(valids)
    num_tokens = [0] * len(valids)
    async with run.tokens() as tokens, aclosing(relay(request, stream, tokens)) as deltas:
        async for index, delta in deltas:
            num_tokens[index] += 1
            for chunk in choices[index].chunks(delta):
                if params.continuous_usage:   # this choice's own count so far, as vLLM's
                    chunk["usage"] = usage_json(valids[index].input_length, num_tokens[index])
                await stream.send(chunk)
            finished[index] = delta.finished or finished[index]
            if all(finished):
                break
    if not all(finished):
        raise IncompleteGenerationStream()
    ends = [end for end in finished if end is not None]
    if params.include_usage:
        usage = usage_json(num_prompt_tokens(valids, params.n), sum(end.generated_tokens for end in ends))
        await stream.send(answer.body([], usage, chunk=True))
    await stream.done()
    return ends
