"""The served model's chat template, rendered with jinja2 the way transformers'
apply_chat_template renders it: a sandboxed environment (templates come from the Hub
and are untrusted code), trim_blocks/lstrip_blocks, loop controls, and the helpers
templates call (`raise_exception`, `strftime_now`, a non-escaping `tojson`). Importing
jinja2 instead of transformers keeps seconds of torch import out of router startup."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from router.errors import TemplateError

log = logging.getLogger(__name__)


class ChatTemplate:
    """Never fails to load: a model without a usable template still serves the native
    routes, and only chat requests get the template error."""

    def __init__(self, template: jinja2.Template | None, special_tokens: dict[str, str], problem: str,
                 source: str = "") -> None:
        self._template = template
        self._special_tokens = special_tokens
        self._problem = problem
        # Whether the template shows `tools` itself, and renders assistant `tool_calls` and
        # `tool` messages; where it does not, router/openai/tool_prompt.py does.
        self.reads_tools = template is not None and "tools" in _variables(source)
        self.reads_tool_calls = template is not None and "tool_calls" in source

    @classmethod
    async def load(cls, files: Mapping[str, bytes]) -> ChatTemplate:
        """From the shard's tokenizer files (file name -> content)."""
        return await asyncio.to_thread(cls._load, files)

    @classmethod
    def _load(cls, files: Mapping[str, bytes]) -> ChatTemplate:
        config = _read_json(files.get("tokenizer_config.json"))
        special_tokens = {name: _token_content(config.get(name)) for name in ("bos_token", "eos_token")}
        source = _template_source(files, config)
        if source is None:
            return cls(None, special_tokens, "no chat template in the model's tokenizer files")
        try:
            return cls(_environment().from_string(source), special_tokens, "", source)
        except jinja2.TemplateError as exc:
            log.warning("the model's chat template does not compile: %s", exc)
            return cls(None, special_tokens, str(exc))

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt for `messages`, ending where the assistant's answer starts; `tools` as
        transformers passes them (`{"type": "function", "function": {...}}` each)."""
        if self._template is None:
            raise TemplateError(self._problem)
        try:
            return self._template.render(messages=messages, add_generation_prompt=True, tools=tools,
                                         **self._special_tokens)
        except jinja2.TemplateError as exc:  # raise_exception() lands here too
            raise TemplateError(str(exc)) from exc
        except (TypeError, KeyError, AttributeError) as exc:  # messages the template cannot handle
            raise TemplateError(f"{type(exc).__name__}: {exc}") from exc


def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    return environment


def _variables(source: str) -> set[str]:
    """The names the template reads from its context."""
    return jinja2.meta.find_undeclared_variables(_environment().parse(source))


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    # jinja2's own tojson escapes HTML characters, which would change the prompt.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _template_source(files: Mapping[str, bytes], config: dict[str, Any]) -> str | None:
    """chat_template.jinja (transformers 4.43+) wins over tokenizer_config.json's
    `chat_template`, which is a string or a list of named templates."""
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"].decode("utf-8", errors="replace")
    source = config.get("chat_template")
    if isinstance(source, list):
        named = {entry.get("name"): entry.get("template") for entry in source if isinstance(entry, dict)}
        source = named.get("default")
    return source if isinstance(source, str) else None


def _read_json(raw: bytes | None) -> dict[str, Any]:
    try:
        content = json.loads(raw) if raw is not None else {}
    except ValueError:  # also UnicodeDecodeError
        return {}
    return content if isinstance(content, dict) else {}


def _token_content(value: Any) -> str:
    # Older configs store special tokens as AddedToken dicts.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""
