"""TGI's POST /chat_tokenize and OpenAI's GET /v1/models/{id}, against the scripted fake
shard over real HTTP and gRPC: the templated prompt and its tokens (as /tokenize gives
them, with no special tokens added: the template wrote them), tools included; bad bodies
in TGI's shape; the served model by its id, a `/` in it, and others a 404 in OpenAI's."""

from __future__ import annotations

import openai
import pytest
import requests

from tests.router.test_router_tools import WEATHER

MESSAGES = [{"role": "user", "content": "hello world"}]


def test_chat_tokenize_gives_the_templated_prompt_and_its_tokens(stack):
    body = requests.post(stack.url + "/chat_tokenize", json={"model": "m", "messages": MESSAGES}, timeout=10).json()
    assert body["templated_text"] == stack.state.chat_template.render(MESSAGES, None)
    tokens = body["tokenize_response"]
    raw = body["templated_text"].encode("utf-8")
    assert all(raw[token["start"]:token["stop"]].decode("utf-8") == token["text"] for token in tokens)
    assert [token["id"] for token in tokens] == stack.state.tokenizer._tokenizer.encode(
        body["templated_text"], add_special_tokens=False).ids
    assert all(set(token) == {"id", "text", "start", "stop"} for token in tokens)


def test_chat_tokenize_shows_the_tools_prompt(make_stack):
    stack = make_stack(max_total_tokens=4096)  # the tool prompt takes many of the fake's word tokens
    body = requests.post(stack.url + "/chat_tokenize", json={"messages": MESSAGES, "tools": [WEATHER]},
                         timeout=10).json()
    assert "get_weather" in body["templated_text"]


@pytest.mark.parametrize("body, message", [({"messages": []}, "`messages` cannot be empty"),
                                           ({"model": "m"}, "missing field `messages`")])
def test_chat_tokenize_errors_are_tgi_shaped(stack, body, message):
    response = requests.post(stack.url + "/chat_tokenize", json=body, timeout=10)
    assert response.status_code == 422 and message in response.json()["error"]
    assert "error_type" in response.json()


def test_the_served_model_by_its_id(stack):
    response = requests.get(stack.url + "/v1/models/fake-org/fake-model", timeout=5)
    assert response.json() == {"id": "fake-org/fake-model", "object": "model", "created": 0,
                               "owned_by": "fake-org/fake-model"}
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)
    assert client.models.retrieve("fake-org/fake-model").id == "fake-org/fake-model"


def test_another_model_is_a_404(stack):
    response = requests.get(stack.url + "/v1/models/gpt-4", timeout=5)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["message"] == "The model `gpt-4` does not exist" and error["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0).models.retrieve("gpt-4")
