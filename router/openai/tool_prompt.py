"""Tools in the prompt, so an agent loop works with any model. A chat template that reads
`tools` gets them (the ones the answer may call, no_tool too) as transformers passes
them; otherwise the default tool prompt below, with the tools as JSON, ends the last
message (as TGI's does). A client's `tool_prompt` (TGI's field) replaces the default
prompt's text; with a template that reads `tools`, TGI appends it alone to the last
message, and so do we (without one, nothing: such a template has its own words for
tools). Earlier turns: a template that renders
`tool_calls` gets the messages as sent (arguments as objects, as vLLM passes them);
otherwise an assistant's calls become the JSON text the model generates for one, and a
`tool` message becomes a user message holding the result."""

from __future__ import annotations

import json
from typing import Any

from router.chat_template import ChatTemplate
from router.openai.tools import Tools
from router.schemas import convert, shape_error

TOOL_PROMPT = ("You're given the following tools. To call one, answer with only a JSON object "
               '{"name": <the tool\'s name>, "arguments": <its arguments, following its parameters>}.')
SEVERAL_CALLS_PROMPT = " To call several, write each call's object on a line of its own."


def prompt_inputs(template: ChatTemplate, messages: list[dict[str, Any]],
                  tools: Tools | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and `tools` to render the template with."""
    if template.reads_tool_calls:
        messages = [_with_argument_objects(message) for message in messages]
    else:
        messages = _history_as_text(messages)
    if tools is None:
        return messages, None
    offered = tools.offered()
    if template.reads_tools:
        return (_ending(messages, tools.prompt) if tools.prompt else messages), offered
    listing = json.dumps([tool["function"] for tool in offered], ensure_ascii=False)
    prompt = _default_prompt(tools) if tools.prompt is None else tools.prompt
    return _ending(messages, f"{prompt}\n{listing}" if prompt else listing), None


def _default_prompt(tools: Tools) -> str:
    return TOOL_PROMPT + (SEVERAL_CALLS_PROMPT if tools.several_calls else "")


def _ending(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """`text` after the last message's content, past TGI's `---` separator line."""
    last = messages[-1]
    return [*messages[:-1], {**last, "content": f"{last['content']}\n---\n{text}"}]


def check_tool_fields(path: str, message: dict[str, Any]) -> dict[str, Any]:
    """An assistant's `tool_calls` and a tool message's `tool_call_id`, type-checked."""
    convert(f"{path}.tool_call_id", message.get("tool_call_id"), "string")
    calls = message.get("tool_calls")
    if calls is None:
        return message
    if not isinstance(calls, list):
        raise shape_error(f"{path}.tool_calls: invalid type, expected a sequence")
    for index, call in enumerate(calls):
        where = f"{path}.tool_calls[{index}]"
        call = convert(where, call, "object") or {}
        convert(f"{where}.id", call.get("id"), "string")
        convert(f"{where}.type", call.get("type"), "string")
        function = convert(f"{where}.function", call.get("function"), "object")
        if function is None:
            raise shape_error(f"{where}: missing field `function`")
        if convert(f"{where}.function.name", function.get("name"), "string") is None:
            raise shape_error(f"{where}.function: missing field `name`")
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, (str, dict)):
            raise shape_error(f"{where}.function.arguments: invalid type, expected a JSON string or object")
    return message


def _arguments(function: dict[str, Any]) -> Any:
    """A call's arguments as an object where the JSON string holds one (clients send a string)."""
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return {} if arguments is None else arguments


def _with_argument_objects(message: dict[str, Any]) -> dict[str, Any]:
    if not message.get("tool_calls"):
        return message
    calls = [{**call, "function": {**call["function"], "arguments": _arguments(call["function"])}}
             for call in message["tool_calls"]]
    return {**message, "tool_calls": calls}


def _history_as_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # call id -> function name, to say whose result a tool message is
    rendered = []
    for message in messages:
        calls = message.get("tool_calls") or []
        if calls:
            texts = [json.dumps({"name": call["function"]["name"], "arguments": _arguments(call["function"])},
                                ensure_ascii=False) for call in calls]
            names.update({call["id"]: call["function"]["name"] for call in calls if call.get("id")})
            text = "\n".join([message["content"], *texts] if message["content"] else texts)
            message = {key: value for key, value in message.items() if key != "tool_calls"}
            rendered.append({**message, "content": text})
        elif message["role"] == "tool":
            name = names.get(message.get("tool_call_id") or "")
            label = f"Result of the tool `{name}`" if name else "Tool result"
            rendered.append({"role": "user", "content": f"{label}: {message['content']}"})
        else:
            rendered.append(message)
    return rendered
