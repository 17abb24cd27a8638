"""The OpenAI routes' JSON: chat.completion(.chunk) and text_completion objects, usage,
both logprobs shapes, and the model list. One Format per route keeps the handlers and
the stream writer route-agnostic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.validation import ValidRequest

if TYPE_CHECKING:
    from router.inference import Generation
    from router.openai.schemas import OpenAIParameters
from router.wire import Finished, Token

# OpenAI's stand-in for a logprob of -inf (JSON has no infinity; chat requires a number).
_MIN_LOGPROB = -9999.0


class ChatFormat:
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    @staticmethod
    def choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> dict:
        return ChatFormat.message_choice(index, {"role": "assistant", "content": text}, finish_reason, logprobs)

    @staticmethod
    def chunk_choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> dict:
        return ChatFormat.delta_choice(index, {"content": text}, finish_reason, logprobs)

    @staticmethod
    def delta_choice(index: int, delta: dict, finish_reason: str | None, logprobs: dict | None) -> dict:
        """A chunk's choice with any delta (a tool call's, router/openai/tool_stream.py). The
        role in every delta, as TGI sends it; clients merge deltas either way."""
        return {"index": index, "delta": {"role": "assistant", **delta}, "logprobs": logprobs,
                "finish_reason": finish_reason}

    @staticmethod
    def message_choice(index: int, message: dict, finish_reason: str | None, logprobs: dict | None) -> dict:
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}

    @staticmethod
    def chunk_extras(token: Token, text: str) -> dict:
        return {}

    @staticmethod
    def logprobs(tokens: Sequence[Token], top_tokens: Sequence[Sequence[Token]], text_offset: int) -> dict:
        return {"content": [{**_chat_logprob(token), "top_logprobs": [_chat_logprob(top) for top in tops]}
                            for token, tops in zip(tokens, top_tokens)]}


class CompletionFormat:
    object = "text_completion"
    chunk_object = "text_completion"
    id_prefix = "cmpl-"

    @staticmethod
    def choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> dict:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}

    chunk_choice = choice

    @staticmethod
    def chunk_extras(token: Token, text: str) -> dict:
        """TGI's stream `token`, so code written for TGI's native stream (`r.token.text`)
        also reads these chunks. Its text is what this chunk adds to the answer (the
        same as the choice's), so joining it gives the answer, without stop strings."""
        return {"token": {**token.to_json(), "text": text}}

    @staticmethod
    def logprobs(tokens: Sequence[Token], top_tokens: Sequence[Sequence[Token]], text_offset: int) -> dict:
        """The legacy shape; `text_offset` is where the first token starts in the answer."""
        offsets = []
        for token in tokens:
            offsets.append(text_offset)
            text_offset += 0 if token.special else len(token.text)
        return {"tokens": [token.text for token in tokens],
                "token_logprobs": [_logprob(token) for token in tokens],
                "top_logprobs": [{top.text: _logprob(top) for top in tops} for tops in top_tokens],
                "text_offset": offsets}


Format = ChatFormat | CompletionFormat


@dataclass(frozen=True, slots=True)
class Answer:
    """What every object of one answer shares."""

    format: type[Format]
    id: str
    created: int
    model: str
    system_fingerprint: str

    @classmethod
    def start(cls, output_format: type[Format], model: str, version: str) -> Answer:
        # The id is the router's own: a client-chosen request id may repeat. TGI's
        # fingerprint: "<version>-<docker label or native>".
        return cls(output_format, output_format.id_prefix + uuid.uuid4().hex, int(time.time()), model,
                   f"{version}-native")

    def body(self, choices: list[dict], usage: dict | None, *, chunk: bool = False) -> dict:
        return {"id": self.id, "object": self.format.chunk_object if chunk else self.format.object,
                "created": self.created, "model": self.model, "system_fingerprint": self.system_fingerprint,
                "choices": choices, "usage": usage}


def usage_json(num_prompt_tokens: int, num_completion_tokens: int) -> dict:
    return {"prompt_tokens": num_prompt_tokens, "completion_tokens": num_completion_tokens,
            "total_tokens": num_prompt_tokens + num_completion_tokens}


def echoed(valid: ValidRequest, generation: Generation, text: str, params: OpenAIParameters
           ) -> tuple[str, dict | None]:
    """A completion with `echo`: the prompt before the answer (with max_tokens 0 the prompt
    alone), and with logprobs the prompt's tokens first, the first of them with null."""
    scored = params.max_tokens == 0
    full_text = valid.inputs + ("" if scored else text)
    if params.num_top_logprobs is None:
        return full_text, None
    tokens = generation.prefill + (() if scored else generation.tokens)
    prompt_tops = generation.prefill_top_tokens or ((),) * len(generation.prefill)
    tops = prompt_tops + (() if scored else generation.top_tokens)
    logprobs = CompletionFormat.logprobs(tokens, tops, 0)
    logprobs["token_logprobs"][0] = logprobs["top_logprobs"][0] = None
    return full_text, logprobs


def num_prompt_tokens(valids: Sequence[ValidRequest], n: int | None) -> int:
    """Each prompt counts once, however many choices (`n`) it has."""
    return sum(valid.input_length for valid in valids[::n or 1])


def finish_reason(finished: Finished) -> str:
    """OpenAI's names: an EOS token and a stop string both end the answer with "stop"."""
    return "length" if finished.finish_reason == "length" else "stop"


def models_json(model_id: str) -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": model_id}]}


def _logprob(token: Token) -> float:
    return _MIN_LOGPROB if token.logprob is None else token.logprob


def _chat_logprob(token: Token) -> dict:
    return {"token": token.text, "logprob": _logprob(token), "bytes": list(token.text.encode("utf-8"))}
