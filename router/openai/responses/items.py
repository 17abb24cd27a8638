"""Responses' conversation items: `input` (a string, or a list of items) checked and made
plain, and items turned into the chat messages the chat template renders. Three kinds of
item: `message` (role user/system/developer/assistant, text content), `function_call` (an
earlier call the model made) and `function_call_output` (its result). A Response's own
output items are valid input items too, so clients can send `response.output` back, and
the store keeps a conversation in the same plain form. Anything else (images, files,
reasoning or built-in tool items) is refused, naming where it was."""

from __future__ import annotations

from typing import Any

from router.errors import InvalidParameter
from router.schemas import convert, describe, shape_error

ROLES = ("user", "system", "developer", "assistant")
ITEM_TYPES = ("message", "function_call", "function_call_output")
TEXT_PARTS = ("input_text", "output_text")

Item = dict[str, Any]


def parse_input(raw: Any) -> tuple[Item, ...]:
    """`input` as plain items: `{"type": "message", "role", "content": <text>}`,
    `{"type": "function_call", "call_id", "name", "arguments"}` and
    `{"type": "function_call_output", "call_id", "output": <text>}`, each with its `id` when
    it came with one."""
    if isinstance(raw, str):
        return ({"type": "message", "role": "user", "content": raw},)
    if not isinstance(raw, list):
        raise shape_error(f"input: invalid type: {describe(raw)}, expected a string or a sequence of items")
    return parse_items("input", raw)


def parse_items(path: str, items: list[Any]) -> tuple[Item, ...]:
    return tuple(_item(f"{path}[{index}]", item) for index, item in enumerate(items))


def _item(path: str, raw: Any) -> Item:
    item = _object(path, raw)
    # An easy input message (`{"role", "content"}`) may leave out its type.
    kind = convert(f"{path}.type", item.get("type", "message" if "role" in item else None), "string")
    if kind is None:
        raise shape_error(f"{path}: missing field `type`")
    plain = _plain(path, kind, item)
    # An item's own id (a Response's output sent back, say) is kept, so that the stored
    # conversation names each item as the client knows it (GET .../input_items).
    item_id = convert(f"{path}.id", item.get("id"), "string")
    return plain if item_id is None else {**plain, "id": item_id}


def _plain(path: str, kind: str, item: Item) -> Item:
    if kind == "message":
        return _message(path, item)
    if kind == "function_call":
        return {"type": kind, "call_id": _string(path, item, "call_id"), "name": _string(path, item, "name"),
                "arguments": _string(path, item, "arguments")}
    if kind == "function_call_output":
        return {"type": kind, "call_id": _string(path, item, "call_id"),
                "output": _text(f"{path}.output", item.get("output"), ("input_text",))}
    expected = ", ".join(f"`{name}`" for name in ITEM_TYPES)
    raise InvalidParameter(f"{path}.type", f"{path}.type: items of type `{kind[:50]}` are not supported by "
                                               f"this server, only {expected}")


def _message(path: str, item: Item) -> Item:
    role = _string(path, item, "role")
    if role not in ROLES:
        expected = ", ".join(f"`{name}`" for name in ROLES)
        raise shape_error(f"{path}.role: unknown variant `{role[:50]}`, expected one of {expected}")
    return {"type": "message", "role": role, "content": _text(f"{path}.content", item.get("content"), TEXT_PARTS)}


def _text(path: str, content: Any, part_types: tuple[str, ...]) -> str:
    """A string, or the text of a list of text parts, joined (as chat does for a text-only model)."""
    if content is None:
        raise shape_error(f"{path}: missing field")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise shape_error(f"{path}: invalid type: {describe(content)}, expected a string or a sequence of parts")
    texts = []
    for index, part in enumerate(content):
        where = f"{path}[{index}]"
        part = _object(where, part)
        kind = convert(f"{where}.type", part.get("type"), "string")
        if kind is None:
            raise shape_error(f"{where}: missing field `type`")
        if kind not in part_types:
            raise InvalidParameter(f"{where}.type", f"{where}.type: content of type `{kind[:50]}` is not "
                                                        f"supported: this model reads text only")
        texts.append(_string(where, part, "text"))
    return "".join(texts)


def to_messages(items: tuple[Item, ...], instructions: str | None) -> list[dict[str, Any]]:
    """Chat messages for the template: `instructions` as the first system message; a
    developer message as a system one (what chat templates know); calls as an assistant
    message's `tool_calls` (neighbouring calls, and the text before them, in one message,
    as chat sends parallel calls); a call's output as a `tool` message."""
    messages: list[dict[str, Any]] = [] if instructions is None else [{"role": "system", "content": instructions}]
    for item in items:
        if item["type"] == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": item["content"]})
        elif item["type"] == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                messages[-1] = {**last, "tool_calls": [*last.get("tool_calls", ()), call]}
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def _string(path: str, item: Item, key: str) -> str:
    value = convert(f"{path}.{key}", item.get(key), "string")
    if value is None:
        raise shape_error(f"{path}: missing field `{key}`")
    return value


def _object(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise shape_error(f"{path}: invalid type: {describe(value)}, expected a JSON object")
    return value
