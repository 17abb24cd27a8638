"""Reading tool calls while they are generated: text of `{"name": "...", "arguments": {...}}`
objects, one per line, comes in, in pieces cut anywhere, and events come out as soon as
they are known: each call's name once, then its arguments object's raw text in fragments
(the final `}` of the outer object is not theirs). For the `no_tool` answer, whose
arguments are `{"content": "..."}`, the content string comes out decoded instead. Each
character is looked at once, so the cost of a whole answer grows linearly with it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

NO_TOOL = "no_tool"  # the pseudo-tool whose `content` is a plain text answer (tool_choice auto)

# Everything before the arguments object, up to its first character. The grammar puts
# `name` first; a name is short, so matching this on the text so far is cheap.
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(?=\S)')
# The same after a call: the end of that call's object first.
_NEXT_HEAD = re.compile(r'\s*\}' + _HEAD.pattern)
_CONTENT_HEAD = re.compile(r'\{\s*"content"\s*:\s*"')
_HEAD_LIMIT = 4096  # past this without a match, the text is no tool call


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "name", "arguments" (a raw fragment) or "content" (decoded text)
    text: str
    index: int = 0  # which tool call a name or fragment belongs to


@dataclass(slots=True)
class Call:
    name: str
    arguments: str = ""  # the raw arguments text so far
    complete: bool = False  # the arguments object has closed


class ToolCallParser:
    def __init__(self) -> None:
        self.calls: list[Call] = []  # in order, no_tool's too
        self._head = ""  # text before a call's arguments, until _HEAD matches
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._plain = False  # not a tool call: the text is the answer
        self._content = _ContentDecoder()

    @property
    def tool_calls(self) -> list[Call]:
        return [call for call in self.calls if call.name != NO_TOOL]

    @property
    def called_tool(self) -> bool:
        return bool(self.tool_calls)

    @property
    def complete(self) -> bool:
        """The last call has closed (and so have all before it)."""
        return bool(self.calls) and self.calls[-1].complete

    def feed(self, text: str) -> list[Event]:
        events: list[Event] = []
        while text:
            if self._plain:
                events.append(Event("content", text))
                break
            if self.calls and not self.calls[-1].complete:
                text = self._feed_arguments(self.calls[-1], text, events)
            else:
                text = self._feed_head(text, events)
        return events

    def finish(self) -> list[Event]:
        """The end of the text: a head that never matched is the answer as it is (what
        follows calls, as the grammar makes it, is the last one's `}`, which is nobody's)."""
        head, self._head = self._head, ""
        if head and not (self.calls and head.strip() in ("", "}")):
            return [Event("content", head)]
        return []

    def _feed_head(self, text: str, events: list[Event]) -> str:
        """Reads up to a call's arguments; returns the text after that."""
        self._head += text
        match = (_NEXT_HEAD if self.calls else _HEAD).match(self._head)
        if match is None:
            if len(self._head) > _HEAD_LIMIT:
                self._plain = True
                head, self._head = self._head, ""
                events.append(Event("content", head))
            return ""
        try:
            name = json.loads(match.group(1))
        except ValueError:  # an unfinished escape cannot match; any other is not a name
            name = match.group(1)
        self.calls.append(Call(name))
        self._content = _ContentDecoder()
        if name != NO_TOOL:
            events.append(Event("name", name, len(self.tool_calls) - 1))
        rest, self._head = self._head[match.end():], ""
        return rest

    def _feed_arguments(self, call: Call, text: str, events: list[Event]) -> str:
        """Reads the call's arguments; returns the text after them."""
        taken = self._scan(text)
        call.arguments += taken
        if call.name == NO_TOOL:
            decoded = self._content.feed(call.arguments, final=call.complete)
            if decoded:
                events.append(Event("content", decoded))
        elif taken:
            events.append(Event("arguments", taken, len(self.tool_calls) - 1))
        return text[len(taken):]

    def _scan(self, text: str) -> str:
        """The part of `text` that belongs to the open arguments object, tracking its
        nesting; marks the call complete when the object closes."""
        for position, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self.calls[-1].complete = True
                    return text[:position + 1]
        return text


class _ContentDecoder:
    """The `content` string of `{"content": "..."}`, decoded as its raw text grows. Only
    the new raw text is decoded each time, up to a point no escape straddles."""

    def __init__(self) -> None:
        self._start: int | None = None  # where the string's raw text starts in the arguments
        self._done = 0  # raw characters decoded so far
        self._closed = False

    def feed(self, arguments: str, final: bool) -> str:
        if self._closed:
            return ""
        if self._start is None:
            match = _CONTENT_HEAD.match(arguments)
            if match is None:
                return ""
            self._start = match.end()
        raw = arguments[self._start + self._done:]
        end = _string_end(raw)
        if end is not None:
            self._closed = True
            safe = raw[:end]
        else:
            safe = raw[:_safe_length(raw)]
        self._done += len(safe)
        try:
            return json.loads(f'"{safe}"') if safe else ""
        except ValueError:  # the grammar makes this valid JSON; anything else stays raw
            return safe


def _string_end(raw: str) -> int | None:
    """Where an unescaped `"` ends the string in `raw`, if it does."""
    escaped = False
    for position, char in enumerate(raw):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return position
    return None


_OPEN_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{0,3})?$')  # `\`, `\u` ... `\uXXX` at the end
_HIGH_SURROGATE = re.compile(r'\\u[dD][89abAB][0-9a-fA-F]{2}$')  # waits for its pair


def _safe_length(raw: str) -> int:
    """How much of `raw` decodes on its own: not an unfinished escape, nor the first half of
    a surrogate pair. A backslash that is itself escaped (`\\\\`) starts nothing."""
    for pattern in (_OPEN_ESCAPE, _HIGH_SURROGATE):
        match = pattern.search(raw)
        if match is not None and not _escaped_backslash(raw, match.start()):
            raw = raw[:match.start()]
    return len(raw)


def _escaped_backslash(raw: str, position: int) -> bool:
    """Whether the backslash at `position` is itself escaped (an odd run before it)."""
    run = len(raw[:position]) - len(raw[:position].rstrip("\\"))
    return run % 2 == 1

