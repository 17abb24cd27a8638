"""Reading a tool call while it is generated: text of `{"name": "...", "arguments": {...}}`
comes in, in pieces cut anywhere, and events come out as soon as they are known: the
name once, then the arguments object's raw text in fragments (the final `}` of the outer
object is not theirs). For the `no_tool` answer, whose arguments are `{"content": "..."}`,
the content string comes out decoded instead. Each character is looked at once, so the
cost of a whole answer grows linearly with it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

NO_TOOL = "no_tool"  # the pseudo-tool whose `content` is a plain text answer (tool_choice auto)

# Everything before the arguments object, up to its first character. The grammar puts
# `name` first; a name is short, so matching this on the text so far is cheap.
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(?=\S)')
_CONTENT_HEAD = re.compile(r'\{\s*"content"\s*:\s*"')
_HEAD_LIMIT = 4096  # past this without a match, the text is no tool call


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "name", "arguments" (a raw fragment) or "content" (decoded text)
    text: str


class ToolCallParser:
    def __init__(self) -> None:
        self.name: str | None = None
        self.arguments = ""  # the raw arguments text so far
        self.complete = False  # the arguments object has closed
        self._head = ""  # text before the arguments, until _HEAD matches
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._plain = False  # not a tool call: the text is the answer
        self._content = _ContentDecoder()

    @property
    def called_tool(self) -> bool:
        return self.name is not None and self.name != NO_TOOL

    def feed(self, text: str) -> list[Event]:
        if self._plain:
            return [Event("content", text)] if text else []
        if self.name is None:
            return self._feed_head(text)
        return self._feed_arguments(text)

    def finish(self) -> list[Event]:
        """The end of the text: a head that never matched is the answer as it is."""
        if self.name is None and self._head:
            head, self._head = self._head, ""
            return [Event("content", head)]
        return []

    def _feed_head(self, text: str) -> list[Event]:
        self._head += text
        match = _HEAD.match(self._head)
        if match is None:
            if len(self._head) > _HEAD_LIMIT:
                self._plain = True
                head, self._head = self._head, ""
                return [Event("content", head)]
            return []
        try:
            self.name = json.loads(match.group(1))
        except ValueError:  # an unfinished escape cannot match; any other is not a name
            self.name = match.group(1)
        rest, self._head = self._head[match.end():], ""
        return [Event("name", self.name), *self._feed_arguments(rest)]

    def _feed_arguments(self, text: str) -> list[Event]:
        if self.complete or not text:
            return []
        taken = self._scan(text)
        self.arguments += taken
        if self.name == NO_TOOL:
            decoded = self._content.feed(self.arguments, final=self.complete)
            return [Event("content", decoded)] if decoded else []
        return [Event("arguments", taken)] if taken else []

    def _scan(self, text: str) -> str:
        """The part of `text` that belongs to the arguments object, tracking its nesting."""
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
                    self.complete = True
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

