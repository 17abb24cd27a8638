"""OpenAI tool calling, the request side: `tools`, `tool_choice` and `parallel_tool_calls`
parsed and checked, and the grammar each choice sends the shard. A call is one JSON
object, `{"name": <a tool's name>, "arguments": <its parameters' schema>}`; with
tool_choice "auto" the pseudo-tool `no_tool` is one more choice, whose `content` is a
plain text answer (TGI's design). With `parallel_tool_calls` (OpenAI's default, true) and
tool_choice "auto" or "required", an answer may hold several calls, one per line; a named
function, or `parallel_tool_calls: false`, is one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.errors import ValidationError
from router.openai.tool_parser import NO_TOOL
from router.schemas import Grammar, convert, describe, shape_error

TOOL_CHOICES = ("none", "auto", "required")

# OpenAI: omitting `parameters` defines a function with an empty parameter list.
_NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}
NO_TOOL_FUNCTION = {
    "name": NO_TOOL, "description": "Answer in plain text, without calling a tool",
    "parameters": {"type": "object", "properties": {"content": {"type": "string", "description": "The answer"}},
                   "required": ["content"], "additionalProperties": False}}


@dataclass(frozen=True, slots=True)
class Tools:
    """The functions a request lets the model call. `functions` are as sent, with
    `parameters` filled in; `choice` is "auto", "required", or "function" (call the one
    named `name`); `prompt` is chat's `tool_prompt` (TGI's), None for the default one."""

    functions: tuple[dict[str, Any], ...]
    choice: str
    name: str | None = None
    parallel: bool = True
    prompt: str | None = None

    def offered(self) -> list[dict[str, Any]]:
        """The functions the answer may call, no_tool too, in the `tools` shape templates read."""
        if self.choice == "auto":
            functions = [*self.functions, NO_TOOL_FUNCTION]
        elif self.choice == "required":
            functions = list(self.functions)
        else:
            functions = [function for function in self.functions if function["name"] == self.name]
        return [{"type": "function", "function": function} for function in functions]

    @property
    def several_calls(self) -> bool:
        """Whether one answer may hold several calls."""
        return self.parallel and self.choice != "function"

    def grammar(self) -> Grammar:
        calls = [_call_schema(tool["function"]) for tool in self.offered()]
        if not self.several_calls:
            return Grammar("json_schema", _one_of(calls), "tools")
        # One or more calls, each on a line of its own; no_tool only alone.
        tool_calls = _one_of([call for call in calls if call["properties"]["name"]["const"] != NO_TOOL])
        rules: list[tuple[str, str | dict[str, Any]]] = [
            ("start", "calls | no_tool" if self.choice == "auto" else "calls"),
            ("calls", 'call ("\\n" call)*'), ("call", tool_calls)]
        if self.choice == "auto":
            rules.append(("no_tool", _call_schema(NO_TOOL_FUNCTION)))
        return Grammar("lark", tuple(rules), "tools")


def parse_tools(body: dict[str, Any]) -> Tools | None:
    """None when no call is possible: no tools, or tool_choice "none" (the tools are still
    checked)."""
    raw_tools = body.get("tools")
    if raw_tools is not None and not isinstance(raw_tools, list):
        raise shape_error(f"tools: invalid type: {describe(raw_tools)}, expected a sequence")
    functions = tuple(_function(f"tools[{index}]", tool) for index, tool in enumerate(raw_tools or []))
    names: set[str] = set()
    for function in functions:
        if function["name"] in names:
            raise ValidationError(f"tools: two tools are named `{function['name']}`; names must be unique")
        names.add(function["name"])
    parallel = convert("parallel_tool_calls", body.get("parallel_tool_calls"), "bool")
    choice, name = _tool_choice(body.get("tool_choice"), bool(functions))
    if name is not None and name not in names:
        raise ValidationError(f"tool_choice: no tool named `{name}` in `tools`")
    if choice == "auto" and NO_TOOL in names:
        raise ValidationError(f"tools: `{NO_TOOL}` is reserved with tool_choice `auto` (it is the plain answer)")
    if choice == "none" or (choice == "auto" and not functions):
        return None
    if not functions:
        raise ValidationError(f"tool_choice `{choice}` needs `tools`")
    return Tools(functions, choice, name, parallel is not False)


def _tool_choice(raw: Any, has_tools: bool) -> tuple[str, str | None]:
    """(mode, None), or ("function", the name of the one function to call). OpenAI's
    default: auto with tools."""
    if raw is None:
        return ("auto" if has_tools else "none"), None
    if isinstance(raw, str):
        if raw not in TOOL_CHOICES:
            raise shape_error(f"tool_choice: unknown variant `{raw[:50]}`, expected one of "
                              f"`none`, `auto`, `required`, or an object naming a function")
        return raw, None
    choice = convert("tool_choice", raw, "object")
    if choice.get("type", "function") != "function":  # huggingface_hub sends no `type`
        raise shape_error(f"tool_choice.type: unknown variant `{str(choice.get('type'))[:50]}`, expected `function`")
    function = convert("tool_choice.function", choice.get("function"), "object")
    if function is None:
        raise shape_error("tool_choice: missing field `function`")
    name = convert("tool_choice.function.name", function.get("name"), "string")
    if name is None:
        raise shape_error("tool_choice.function: missing field `name`")
    return "function", name


def _function(path: str, tool: Any) -> dict[str, Any]:
    tool = convert(path, tool, "object")
    if tool is None:
        raise shape_error(f"{path}: invalid type: null, expected a JSON object")
    if tool.get("type", "function") != "function":
        raise ValidationError(f"{path}.type: only `function` tools are supported. Given: {str(tool.get('type'))[:50]}")
    function = convert(f"{path}.function", tool.get("function"), "object")
    if function is None:
        raise shape_error(f"{path}: missing field `function`")
    name = convert(f"{path}.function.name", function.get("name"), "string")
    if not name:
        raise shape_error(f"{path}.function: missing field `name`" if name is None
                          else f"{path}.function.name cannot be empty")
    convert(f"{path}.function.description", function.get("description"), "string")
    convert(f"{path}.function.strict", function.get("strict"), "bool")  # the grammar is always strict
    # TGI's name is `arguments`, with `parameters` as its alias.
    key = "parameters" if function.get("parameters") is not None else "arguments"
    parameters = convert(f"{path}.function.{key}", function.get(key), "object")
    given = {field: value for field, value in function.items() if field != "arguments"}
    return {**given, "name": name, "parameters": _NO_PARAMETERS if parameters is None else parameters}


def _one_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    # `name` first: the grammar keeps the properties' order, and the parser reads the name first.
    return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": function["parameters"]},
            "required": ["name", "arguments"], "additionalProperties": False}
