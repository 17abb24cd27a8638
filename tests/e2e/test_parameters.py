"""Every TGI generation parameter through the real stack (router + shard + SmolLM2)."""
from __future__ import annotations

import json

import pytest

from tests.e2e.test_stack import post

PROMPT = "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n"


def generate(url: str, **parameters) -> dict:
    status, _, raw = post(url, "/generate", {"inputs": PROMPT, "parameters": parameters})
    assert status == 200, raw
    return json.loads(raw)


def test_details_decoder_input_details_and_top_n_tokens(stack_url):
    out = generate(stack_url, max_new_tokens=5, details=True, decoder_input_details=True,
                   top_n_tokens=3)
    details = out["details"]
    assert details["finish_reason"] == "length" and details["generated_tokens"] == 5
    assert details["seed"] is None
    prefill = details["prefill"]
    assert prefill[0]["logprob"] is None and all(p["logprob"] < 0 for p in prefill[1:])
    assert "".join(p["text"] for p in prefill) == PROMPT
    assert len(details["tokens"]) == 5 and len(details["top_tokens"]) == 5
    for token, top in zip(details["tokens"], details["top_tokens"]):
        assert len(top) == 3 and top[0]["id"] == token["id"]     # greedy takes the best
    assert out["generated_text"] == "".join(t["text"] for t in details["tokens"])


def test_seeded_sampling_is_reproducible_and_reports_its_seed(stack_url):
    params = dict(max_new_tokens=16, do_sample=True, temperature=0.8, top_k=40, top_p=0.9,
                  typical_p=0.95, seed=7, details=True)
    first, second = generate(stack_url, **params), generate(stack_url, **params)
    assert first["generated_text"] == second["generated_text"]
    assert first["details"]["seed"] == 7
    assert generate(stack_url, **{**params, "seed": 8})["generated_text"] != first["generated_text"]


def test_sampling_without_a_seed_reports_the_seed_it_used(stack_url):
    out = generate(stack_url, max_new_tokens=4, do_sample=True, details=True)
    assert isinstance(out["details"]["seed"], int)


@pytest.mark.parametrize("params", [{"repetition_penalty": 3.0}, {"frequency_penalty": 2.0},
                                    {"presence_penalty": 2.0}, {"watermark": True}], ids=str)
def test_penalties_and_watermark_change_greedy_output(stack_url, params):
    story = "<|im_start|>user\nTell a long story about a dragon.<|im_end|>\n<|im_start|>assistant\n"

    def text(**extra):
        body = {"inputs": story, "parameters": {"max_new_tokens": 40, **extra}}
        status, _, raw = post(stack_url, "/generate", body)
        assert status == 200, raw
        return json.loads(raw)["generated_text"]

    assert text(**params) != text()


def test_stop_sequence_ends_generation_and_is_kept(stack_url):
    plain = generate(stack_url, max_new_tokens=24)["generated_text"]
    stop = plain[5:8]
    out = generate(stack_url, max_new_tokens=24, stop=[stop], details=True)
    assert out["details"]["finish_reason"] == "stop_sequence"
    assert out["generated_text"].endswith(stop) and plain.startswith(out["generated_text"])


def test_return_full_text_and_truncate(stack_url):
    plain = generate(stack_url, max_new_tokens=6)["generated_text"]
    assert generate(stack_url, max_new_tokens=6, return_full_text=True)["generated_text"] == PROMPT + plain
    out = generate(stack_url, max_new_tokens=6, truncate=3, decoder_input_details=True)
    assert len(out["details"]["prefill"]) == 3            # only the last 3 prompt tokens


def test_best_of_returns_the_best_and_the_others(stack_url):
    out = generate(stack_url, max_new_tokens=6, best_of=2, do_sample=True, details=True)
    others = out["details"]["best_of_sequences"]
    assert len(others) == 1 and others[0]["generated_tokens"] == 6
    assert isinstance(others[0]["seed"], int)


@pytest.mark.parametrize("text", ["Repeat after me: 😀 🎉 你好，世界 — naïve café"])
def test_streamed_token_texts_join_to_generated_text_for_emoji_and_cjk(stack_url, text):
    prompt = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 40, "do_sample": True,
                                             "temperature": 1.3, "seed": 5}}
    status, _, raw = post(stack_url, "/generate_stream", body)
    assert status == 200
    events = [json.loads(c[len(b"data: "):]) for c in raw.split(b"\n\n") if c.strip()]
    joined = "".join(e["token"]["text"] for e in events if not e["token"]["special"])
    assert joined.encode() == events[-1]["generated_text"].encode()
    assert "\ufffd" not in joined
