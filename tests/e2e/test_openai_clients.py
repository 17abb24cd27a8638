"""The OpenAI routes on the real stack (SmolLM2), driven by the clients people use, unchanged:
the openai SDK, huggingface_hub's chat_completion, and @huggingface/inference in Node
(the latest release on /v1/*, and 4.13.16 on TGI's native `/`), whose packages
`make test-deps` installs from tests/node/package-lock.json."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from huggingface_hub import InferenceClient

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
PROMPT = "What is Deep Learning?"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
NUM_TOKENS = 12

def check_node_setup() -> None:
    """`make test` installs the Node packages; without them these tests fail, never skip."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@huggingface" / "inference").is_dir():
        pytest.fail("Node.js or the packages in tests/node are missing: run `make test-deps`")


def test_chat_without_max_tokens_ends_by_itself(sdk):
    """No hidden small default: the answer ends with EOS ("stop"), and the stream says the same."""
    answer = sdk.chat.completions.create(model="tgi", messages=QUESTION, temperature=0)
    content = answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop" and "Paris" in content
    chunks = list(sdk.chat.completions.create(model="tgi", messages=QUESTION, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks[:-1]) == content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == answer.usage.completion_tokens


def test_completions_stream_and_not(sdk):
    completion = sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=NUM_TOKENS, temperature=0)
    text = completion.choices[0].text
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == NUM_TOKENS
    chunks = list(sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=NUM_TOKENS, temperature=0,
                                         stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks) == text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_string_never_reaches_the_client(sdk):
    """`stop: ["Pari"]` ends "Paris" (one token) before it starts, streamed or not."""
    answer = sdk.chat.completions.create(model="tgi", messages=QUESTION, temperature=0, stop=["Pari"])
    assert answer.choices[0].message.content == "The capital of France is "
    assert answer.choices[0].finish_reason == "stop"
    chunks = list(sdk.chat.completions.create(model="tgi", messages=QUESTION, temperature=0, stop=["Pari"],
                                              stream=True))
    texts = [chunk.choices[0].delta.content for chunk in chunks]
    assert "".join(texts) == "The capital of France is " and not any("P" in text for text in texts)


def test_hub_chat_completion_stream(stack_url, sdk):
    expected = sdk.chat.completions.create(model="tgi", messages=QUESTION, temperature=0, max_tokens=NUM_TOKENS)
    client = InferenceClient(stack_url)
    chunks = list(client.chat_completion(QUESTION, temperature=0, max_tokens=NUM_TOKENS, stream=True))
    assert "".join(chunk.choices[0].delta.content for chunk in chunks) == expected.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == expected.choices[0].finish_reason


def run_node(call: str, url: str) -> str:
    check_node_setup()
    result = subprocess.run(["node", "clients.mjs", call, url, PROMPT, str(NUM_TOKENS)], cwd=NODE_DIR,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("call", ["text-generation", "text-generation-stream", "legacy-text-generation-stream"])
def test_huggingface_js_text_generation(stack_url, sdk, call):
    """Latest: /v1/completions, the stream read with the streaming page's `r.token.text`
    loop; 4.13.16: TGI's native `/`, the same loop. All print the same greedy text."""
    expected = sdk.completions.create(model="tgi", prompt=PROMPT, max_tokens=NUM_TOKENS, temperature=0)
    assert run_node(call, stack_url) == expected.choices[0].text


def test_huggingface_js_chat_completion_stream(stack_url, sdk):
    messages = [{"role": "user", "content": PROMPT}]
    expected = sdk.chat.completions.create(model="tgi", messages=messages, max_tokens=NUM_TOKENS, temperature=0)
    assert run_node("chat-completion-stream", stack_url) == expected.choices[0].message.content
