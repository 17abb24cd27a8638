"""The Response object through its life, and the typed event stream that carries it. A
stream is `event: <type>` + `data: {json}` frames, numbered by `sequence_number` from 0, in
OpenAI's order: response.created, response.in_progress, each output item's events
(output.py), then one last event: response.completed, response.incomplete (the answer ran
out of tokens), or response.failed (anything that goes wrong after the headers). No
`data: [DONE]`: the Responses API has none."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Mapping
from typing import Any

from router.errors import RouterError
from router.openai.responses.output import OutputAssembler
from router.openai.responses.schemas import ResponsesRequest
from router.sse import EventStream, encode_event
from router.wire import Finished


class ResponseEventStream(EventStream):
    """chat's EventStream (headers, keep-alive, relay), with named, numbered events."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__(headers)
        self._next_number = 0

    async def send(self, payload: dict) -> None:
        payload = {**payload, "sequence_number": self._next_number}
        self._next_number += 1
        await self._event(f"event: {payload['type']}\n".encode() + encode_event(payload))


class ResponseDraft:
    """One Response: its id (the router's own, `resp_…`), the echoed request fields, and
    its output as the OutputAssembler builds it."""

    def __init__(self, request: ResponsesRequest, model: str, output: OutputAssembler, stored: bool) -> None:
        self.id = "resp_" + uuid.uuid4().hex
        self.output = output
        self._base = {
            "id": self.id, "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "background": False, "completed_at": None, "error": None, "incomplete_details": None, "model": model,
            "output": [], "max_tool_calls": None, "reasoning": None, "service_tier": "default", "top_logprobs": 0,
            "truncation": "disabled", "usage": None, **request.echo, "store": stored}

    def snapshot(self) -> dict[str, Any]:
        """The response in progress (response.created, response.in_progress)."""
        return copy.deepcopy(self._base)

    def finished(self, finished: Finished, input_tokens: int) -> dict[str, Any]:
        """The finished response; call after output.finish."""
        incomplete = self.output.incomplete
        return {**self.snapshot(), "status": "incomplete" if incomplete else "completed",
                "completed_at": int(time.time()),
                "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
                "output": copy.deepcopy(self.output.items),
                "usage": usage_json(input_tokens, finished.generated_tokens)}

    def failed_event(self, err: RouterError) -> dict[str, Any]:
        """The response.failed event: the output so far, and why."""
        return {"type": "response.failed", "response": {
            **self.snapshot(), "status": "failed", "error": {"code": "server_error", "message": err.message},
            "output": copy.deepcopy(self.output.items)}}


def lifecycle_event(kind: str, response: dict[str, Any]) -> dict[str, Any]:
    """response.created, .in_progress, .completed or .incomplete, carrying `response`."""
    return {"type": f"response.{kind}", "response": response}


def final_event(response: dict[str, Any]) -> dict[str, Any]:
    return lifecycle_event("incomplete" if response["status"] == "incomplete" else "completed", response)


def usage_json(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Responses' usage shape; nothing is cached or spent on reasoning here."""
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}
