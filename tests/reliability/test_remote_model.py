"""The router reads nothing from the shard's disk (issue 13.4): the shard sends the
tokenizer and chat template over gRPC, so a router fronting a shard on another host, with
a model it has never seen, tokenizes and renders chat prompts exactly as the model does.
Here the shard's model directory is deleted after the shard has loaded it and before the
router starts: no path names it on any host."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jinja2
from tokenizers import Tokenizer

from tests.conftest import Process, free_port, serving
from tests.reliability.real_stack import CHATML


def _post(url: str, path: str, body: dict) -> dict | list:
    import urllib.request

    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_router_serves_a_model_it_cannot_see(tiny_model: Path, tmp_path: Path):
    model_dir = tmp_path / "model-only-the-shard-has"
    shutil.copytree(tiny_model, model_dir)
    expected_tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    grpc_port = free_port()
    shard = Process(["-m", "shard", "--model-id", str(model_dir), "--dtype", "float32", "--num-threads", "1",
                     "--port", str(grpc_port)], tmp_path / "shard.log")
    try:
        shard.wait_for(lambda: "SHARD READY" in shard.output(), 300, "shard")
        shutil.rmtree(model_dir)
        with serving(["-m", "router", "--shard-uri", f"127.0.0.1:{grpc_port}"], tmp_path / "router.log") as (url, _):
            text = "hello world, how are you?"
            tokens = _post(url, "/tokenize", {"inputs": text})
            assert [token["id"] for token in tokens] == expected_tokenizer.encode(text).ids

            messages = [{"role": "user", "content": "hello"}]
            answer = _post(url, "/v1/chat/completions", {"model": "m", "messages": messages, "max_tokens": 3})
            prompt = jinja2.Template(CHATML).render(messages=messages, add_generation_prompt=True)
            # The template's own special tokens, no BOS on top: what the router's tokenizer
            # counts for the prompt the shard's template rendered.
            expected_ids = expected_tokenizer.encode(prompt, add_special_tokens=False).ids
            assert answer["usage"]["prompt_tokens"] == len(expected_ids)
            assert answer["choices"][0]["finish_reason"] == "length"

            # The shard's first grammar is built after its model directory is gone.
            answer = _post(url, "/generate", {"inputs": "digits:", "parameters": {
                "max_new_tokens": 8, "grammar": {"type": "regex", "value": "[0-9]{3}"}}})
            assert re.fullmatch("[0-9]{3}", answer["generated_text"]), answer
    finally:
        shard.stop()
