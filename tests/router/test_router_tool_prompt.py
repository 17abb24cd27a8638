"""TGI's `tool_prompt` on /v1/chat/completions, against the scripted fake shard over real
HTTP and gRPC: the prompt the shard receives holds the client's text in place of the
default tool prompt's, then the tools as JSON; with a chat template that renders `tools`
itself, the text alone ends the last message (as TGI appends it); without tools, or with
tool_choice "none", it changes nothing; a tool_prompt that is no string is a 422."""

from __future__ import annotations

import json
import os

import pytest
from tokenizers import Tokenizer

from router.chat_template import ChatTemplate
from router.openai.schemas import parse_chat
from router.openai.tool_prompt import SEVERAL_CALLS_PROMPT, TOOL_PROMPT, prompt_inputs
from tests.router.test_router_tools import MESSAGES, TOOL_TEMPLATE, WEATHER, chat

# Words the fake's word-level tokenizer knows, so the prompt's ids show them one by one.
CUSTOM = "how do you make cheese ?"


@pytest.fixture
def stack(make_stack):
    return make_stack(max_total_tokens=4096)  # the tools' JSON takes many of the fake's word tokens


def ids_of(tokenizer_dir: str, text: str) -> list[int]:
    """The ids the router sends for a chat prompt (its template wrote any special tokens)."""
    tokenizer = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
    return tokenizer.encode(text, add_special_tokens=False).ids


def listing(*tools: dict) -> str:
    return json.dumps([tool["function"] for tool in tools], ensure_ascii=False)


def test_the_shard_gets_the_clients_tool_prompt(stack, tokenizer_dir):
    response = chat(stack, tools=[WEATHER], tool_choice="required", tool_prompt=CUSTOM, max_tokens=2)
    assert response.status_code == 200, response.text
    expected = f"user: hello\n---\n{CUSTOM}\n{listing(WEATHER)}\nassistant:"
    assert list(stack.fake.requests[-1].input_ids) == ids_of(tokenizer_dir, expected)
    # Without it, the default prompt's text stands where the client's did.
    assert chat(stack, tools=[WEATHER], tool_choice="required", max_tokens=2).status_code == 200
    default = f"user: hello\n---\n{TOOL_PROMPT}{SEVERAL_CALLS_PROMPT}\n{listing(WEATHER)}\nassistant:"
    assert list(stack.fake.requests[-1].input_ids) == ids_of(tokenizer_dir, default)
    assert ids_of(tokenizer_dir, default) != ids_of(tokenizer_dir, expected)


def test_streamed_and_auto_requests_take_it_too(stack, tokenizer_dir):
    # auto offers no_tool beside the tools; the listing shows it, after the client's text.
    assert chat(stack, tools=[WEATHER], tool_prompt=CUSTOM, max_tokens=2, stream=True).status_code == 200
    request = parse_chat({"messages": MESSAGES, "tools": [WEATHER]})
    offered = [tool["function"] for tool in request.tools.offered()]
    expected = f"user: hello\n---\n{CUSTOM}\n{json.dumps(offered, ensure_ascii=False)}\nassistant:"
    assert list(stack.fake.requests[-1].input_ids) == ids_of(tokenizer_dir, expected)


def test_an_empty_tool_prompt_leaves_only_the_tools(stack, tokenizer_dir):
    assert chat(stack, tools=[WEATHER], tool_choice="required", tool_prompt="", max_tokens=2).status_code == 200
    expected = f"user: hello\n---\n{listing(WEATHER)}\nassistant:"
    assert list(stack.fake.requests[-1].input_ids) == ids_of(tokenizer_dir, expected)


def test_without_tools_it_changes_nothing(stack, tokenizer_dir):
    plain = ids_of(tokenizer_dir, "user: hello\nassistant:")
    assert chat(stack, tool_prompt=CUSTOM, max_tokens=2).status_code == 200
    assert list(stack.fake.requests[-1].input_ids) == plain
    assert chat(stack, tools=[WEATHER], tool_choice="none", tool_prompt=CUSTOM, max_tokens=2).status_code == 200
    assert list(stack.fake.requests[-1].input_ids) == plain


def test_a_template_that_renders_tools_gets_the_text_alone():
    template = ChatTemplate._load({"chat_template.jinja": TOOL_TEMPLATE.encode()})
    request = parse_chat({"messages": MESSAGES, "tools": [WEATHER], "tool_choice": "required",
                          "tool_prompt": "Call one."})
    prompt = template.render(*prompt_inputs(template, list(request.messages), request.tools))
    assert prompt == "[get_weather]user:hello\n---\nCall one.|"
    # Without one, such a template has its own words for tools: nothing is added.
    request = parse_chat({"messages": MESSAGES, "tools": [WEATHER], "tool_choice": "required"})
    assert template.render(*prompt_inputs(template, list(request.messages), request.tools)) == "[get_weather]user:hello|"


@pytest.mark.parametrize("tool_prompt", [3, ["a"], {"text": "a"}, True])
def test_a_tool_prompt_that_is_no_string_is_a_422(stack, tool_prompt):
    response = chat(stack, tools=[WEATHER], tool_prompt=tool_prompt)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "tool_prompt: invalid type" in error["message"] and error["code"] == 422
    assert stack.fake.requests == []
