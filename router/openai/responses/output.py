"""One answer's output items, built from the generated text as it comes, with the stream
events OpenAI sends for each step: a `message` item holding one `output_text` part, or,
when the answer may call a tool, the `function_call` items chat's ToolCallOutput reads
from the text (each call's first delta opens its item, argument fragments follow). A
whole (not streamed) answer goes through the same steps at once, so a stream's deltas
join to exactly the items a non-streamed answer holds."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from router.openai.answers import finish_reason
from router.openai.tool_stream import ToolCallOutput
from router.wire import Finished

Event = dict[str, Any]  # without its sequence_number, which the stream adds


class OutputAssembler:
    def __init__(self, tool_output: ToolCallOutput | None = None) -> None:
        self._tool_output = tool_output
        self.items: list[dict[str, Any]] = []  # every item so far, the open one (the last) too
        self._open: dict[str, Any] | None = None
        self.incomplete = False  # set by finish: the generation ran out of tokens

    def push(self, text: str, final: bool) -> list[Event]:
        """The events `text` (the next generated piece; the last one when `final`) makes."""
        if self._tool_output is None:
            deltas = [{"content": text}]
        else:
            deltas = self._tool_output.deltas(text, final=final)
        return [event for delta in deltas for event in self._apply(delta)]

    def finish(self, finished: Finished) -> list[Event]:
        """Close the open item: "incomplete" when the answer ran out of tokens before it was
        whole (a call cut short included), else "completed". An answer with no text and no
        call still has its (empty) message, as clients read `output[0]`."""
        reason = finish_reason(finished) if self._tool_output is None else self._tool_output.finish_reason(finished)
        self.incomplete = reason == "length"
        events = [] if self.items else self._open_message()
        return events + self._close("incomplete" if self.incomplete else "completed")

    def _apply(self, delta: dict[str, Any]) -> list[Event]:
        if "content" in delta:
            if not delta["content"]:
                return []
            events = [] if self._is_open("message") else self._close("completed") + self._open_message()
            part = self._open["content"][0]
            part["text"] += delta["content"]
            return events + [{"type": "response.output_text.delta", **self._where(), "content_index": 0,
                              "delta": delta["content"], "logprobs": []}]
        call = delta["tool_calls"][0]
        if "id" in call:  # a new call
            return self._close("completed") + self._open_item({
                "id": "fc_" + uuid.uuid4().hex, "type": "function_call", "status": "in_progress",
                "call_id": call["id"], "name": call["function"]["name"], "arguments": ""})
        fragment = call["function"]["arguments"]
        self._open["arguments"] += fragment
        return [{"type": "response.function_call_arguments.delta", **self._where(), "delta": fragment}]

    def _open_message(self) -> list[Event]:
        events = self._open_item({"id": "msg_" + uuid.uuid4().hex, "type": "message", "status": "in_progress",
                                  "role": "assistant", "content": []})
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self._open["content"].append(part)
        return events + [{"type": "response.content_part.added", **self._where(), "content_index": 0,
                          "part": copy.deepcopy(part)}]

    def _open_item(self, item: dict[str, Any]) -> list[Event]:
        self.items.append(item)
        self._open = item
        return [{"type": "response.output_item.added", "output_index": len(self.items) - 1,
                 "item": copy.deepcopy(item)}]

    def _close(self, status: str) -> list[Event]:
        item = self._open
        if item is None:
            return []
        where = self._where()
        self._open = None
        item["status"] = status
        if item["type"] == "message":
            part = item["content"][0]
            events = [{"type": "response.output_text.done", **where, "content_index": 0, "text": part["text"],
                       "logprobs": []},
                      {"type": "response.content_part.done", **where, "content_index": 0,
                       "part": copy.deepcopy(part)}]
        else:
            events = [{"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"]}]
        return events + [{"type": "response.output_item.done", "output_index": where["output_index"],
                          "item": copy.deepcopy(item)}]

    def _is_open(self, kind: str) -> bool:
        return self._open is not None and self._open["type"] == kind

    def _where(self) -> dict[str, Any]:
        return {"item_id": self._open["id"], "output_index": len(self.items) - 1}
