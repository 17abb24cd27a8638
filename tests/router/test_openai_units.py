"""Pure pieces of the OpenAI routes: stop strings held back and cut (stops.py), and the
chat template (chat_template.py) rendered as transformers renders it."""

from __future__ import annotations

import asyncio
import json

import pytest

from router.chat_template import ChatTemplate
from router.errors import TemplateError
from router.stops import StopTrimmer, cut_at_stop


def stream(stops: tuple[str, ...], texts: list[str]) -> list[str]:
    trimmer = StopTrimmer(stops)
    return [trimmer.push(text, final=index == len(texts) - 1) for index, text in enumerate(texts)]


def test_stop_inside_a_token_is_cut():
    # Requirement: `stop: ["Pari"]` stops on "Paris", and "Pari" is never sent.
    assert stream(("Pari",), ["The capital is", " Paris", "."]) == ["The capital is", " ", ""]
    assert cut_at_stop("The capital is Paris.", ("Pari",)) == "The capital is "


def test_stop_across_tokens_is_held_back_then_dropped():
    # vLLM's case: the stop string arrives one letter at a time after "ABC".
    chunks = stream(("DEFGHIJ",), ["ABC", "D", "E", "F", "G", "H", "I", "J", "K"])
    assert chunks == ["ABC", "", "", "", "", "", "", "", ""]


def test_false_start_is_released():
    chunks = stream(("DEFGHIJ",), ["ABC", "D", "E", "X", "Y"])
    assert chunks == ["ABC", "", "", "DEX", "Y"]
    assert "".join(chunks) == cut_at_stop("ABCDEXY", ("DEFGHIJ",))


def test_earliest_of_several_stops_wins():
    assert cut_at_stop("one two three", ("three", "two")) == "one "
    assert stream(("three", "two", ""), ["one t", "wo three"]) == ["one ", ""]


def test_no_stops_streams_everything():
    assert stream((), ["a", "b"]) == ["a", "b"]


def model_files(template: str | None, config: dict) -> dict[str, bytes]:
    """The files a shard's Tokenizer call sends."""
    files = {"tokenizer_config.json": json.dumps(config).encode()}
    if template is not None:
        files["chat_template.jinja"] = template.encode()
    return files


def test_template_sees_messages_special_tokens_and_helpers():
    template = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}={{ m['content'] | tojson }};"
                "{% endfor %}{% if add_generation_prompt %}{{ eos_token }}{% endif %}")
    files = model_files(template, {"bos_token": {"content": "<s>"}, "eos_token": "</s>"})
    chat = asyncio.run(ChatTemplate.load(files))
    assert chat.render([{"role": "user", "content": "é<b>"}]) == '<s>user="é<b>";</s>'


def test_template_from_tokenizer_config():
    config = {"chat_template": [{"name": "default", "template": "{{ messages[0]['content'] }}!"}]}
    chat = asyncio.run(ChatTemplate.load(model_files(None, config)))
    assert chat.render([{"role": "user", "content": "hi"}]) == "hi!"


@pytest.mark.parametrize("template, expected", [
    (None, "Template error: no chat template in"),
    ("{{ raise_exception('roles must alternate') }}", "Template error: roles must alternate"),
    ("{% for %}", "Template error: "),  # does not compile: only chat requests fail
    ("{{ ''.__class__.__mro__ }}", "Template error: "),  # the sandbox refuses
])
def test_template_problems_are_template_errors(template, expected):
    chat = asyncio.run(ChatTemplate.load(model_files(template, {})))
    with pytest.raises(TemplateError) as error:
        chat.render([{"role": "user", "content": "hi"}])
    assert error.value.message.startswith(expected) and error.value.status == 422
