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
        self.call_id = "call_" + uuid.uuid4().hex[:24]  # the router's own, unique per call

    def deltas(self, text: str, final: bool) -> list[dict]:
        """What `text` adds, as delta objects (without `role`): the call's first delta has
        its id, type, name and `arguments: ""`; the later ones argument fragments; the
        no_tool answer's deltas are `content`."""
        events = self._parser.feed(text) + (self._parser.finish() if final else [])
        return _merged([self._delta(event) for event in events])

    def finish_reason(self, finished: Finished) -> str:
        """"tool_calls" once the call is whole; else why the generation ended."""
        return "tool_calls" if self._parser.called_tool and self._parser.complete else finish_reason(finished)

    def message(self, text: str) -> dict:
        """The non-streamed message for the whole generated `text`."""
        content = "".join(delta.get("content", "") for delta in self.deltas(text, final=True))
        if not self._parser.called_tool:
            return {"role": "assistant", "content": content}
        call = {"id": self.call_id, "type": "function",
                "function": {"name": self._parser.name, "arguments": self._parser.arguments}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}

    def _delta(self, event: Event) -> dict:
        if event.kind == "content":
            return {"content": event.text}
        if event.kind == "name" and self._parser.called_tool:
            return {"tool_calls": [{"index": 0, "id": self.call_id, "type": "function",
                                    "function": {"name": event.text, "arguments": ""}}]}
        if event.kind == "arguments":
            return {"tool_calls": [{"index": 0, "function": {"arguments": event.text}}]}
        return {}  # no_tool's name: its content follows


def _merged(deltas: list[dict]) -> list[dict]:
    """Neighbouring content deltas, and neighbouring argument fragments, as one."""
    merged: list[dict] = []
    for delta in deltas:
        if not delta:
            continue
        previous = merged[-1] if merged else {}
        if "content" in delta and "content" in previous:
            merged[-1] = {"content": previous["content"] + delta["content"]}
        elif _fragment(delta) is not None and _fragment(previous) is not None:
            text = _fragment(previous) + _fragment(delta)
            merged[-1] = {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}
        else:
            merged.append(delta)
    return merged


def _fragment(delta: dict) -> str | None:
    """The argument fragment of a delta that holds only that."""
    calls = delta.get("tool_calls")
    if not calls or "id" in calls[0]:
        return None
    return calls[0]["function"]["arguments"]
