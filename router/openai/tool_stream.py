"""One chat choice's output when it may call a tool: the generated text (after stop
strings) goes through a ToolCallParser, and comes out as OpenAI's deltas while streaming,
or as the whole message. Both come from the same events, so a stream's argument fragments
join to exactly the message's `arguments`."""

from __future__ import annotations

import uuid

from router.openai.answers import finish_reason
from router.openai.tool_parser import Event, ToolCallParser
from router.wire import Finished


class ToolCallOutput:
    def __init__(self) -> None:
        self._parser = ToolCallParser()
        self._call_ids: list[str] = []  # the router's own, unique per call, made as calls start

    def deltas(self, text: str, final: bool) -> list[dict]:
        """What `text` adds, as delta objects (without `role`): a call's first delta has its
        index, id, type, name and `arguments: ""`; the later ones its index and argument
        fragments; the no_tool answer's deltas are `content`."""
        events = self._parser.feed(text) + (self._parser.finish() if final else [])
        return _merged([self._delta(event) for event in events])

    def finish_reason(self, finished: Finished) -> str:
        """"tool_calls" once the calls are whole; else why the generation ended."""
        return "tool_calls" if self._parser.called_tool and self._parser.complete else finish_reason(finished)

    def message(self, text: str) -> dict:
        """The non-streamed message for the whole generated `text`."""
        content = "".join(delta.get("content", "") for delta in self.deltas(text, final=True))
        if not self._parser.called_tool:
            return {"role": "assistant", "content": content}
        calls = [{"id": self._call_id(index), "type": "function",
                  "function": {"name": call.name, "arguments": call.arguments}}
                 for index, call in enumerate(self._parser.tool_calls)]
        return {"role": "assistant", "content": content or None, "tool_calls": calls}

    def _call_id(self, index: int) -> str:
        while len(self._call_ids) <= index:
            self._call_ids.append("call_" + uuid.uuid4().hex[:24])
        return self._call_ids[index]

    def _delta(self, event: Event) -> dict:
        if event.kind == "content":
            return {"content": event.text}
        if event.kind == "name":
            return {"tool_calls": [{"index": event.index, "id": self._call_id(event.index), "type": "function",
                                    "function": {"name": event.text, "arguments": ""}}]}
        return {"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]}


def _merged(deltas: list[dict]) -> list[dict]:
    """Neighbouring content deltas, and neighbouring argument fragments of one call, as one."""
    merged: list[dict] = []
    for delta in deltas:
        previous = merged[-1] if merged else {}
        if "content" in delta and "content" in previous:
            merged[-1] = {"content": previous["content"] + delta["content"]}
        elif _fragment(delta) is not None and _fragment(previous) is not None \
                and delta["tool_calls"][0]["index"] == previous["tool_calls"][0]["index"]:
            call = delta["tool_calls"][0]
            text = _fragment(previous) + _fragment(delta)
            merged[-1] = {"tool_calls": [{"index": call["index"], "function": {"arguments": text}}]}
        else:
            merged.append(delta)
    return merged


def _fragment(delta: dict) -> str | None:
    """The argument fragment of a delta that holds only that."""
    calls = delta.get("tool_calls")
    if not calls or "id" in calls[0]:
        return None
    return calls[0]["function"]["arguments"]
