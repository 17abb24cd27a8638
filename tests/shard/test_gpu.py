"""The engine on a CUDA device in bfloat16 (issue: `--device cuda --dtype bfloat16`).
Runs only where a GPU exists; CI and the default stay on the CPU."""
from __future__ import annotations

import pytest
import torch

from tests.shard.test_engine import PROMPT, hf_greedy, token_ids

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cuda_bf16_engine_streams_joins_and_cancels(harness_factory):
    harness = harness_factory("--device", "cuda", "--dtype", "bfloat16")
    assert harness.info.device == "cuda" and harness.info.dtype == "bfloat16"
    harness.submit("long", PROMPT, max_new_tokens=100, stopping={"ignore_eos_token": True})
    harness.next_event("long")
    harness.submit("late", PROMPT[:5], max_new_tokens=4, stopping={"ignore_eos_token": True})
    assert harness.collect("late")[-1].finished.generated_tokens == 4
    harness.engine.abort("long")
    sampled = {"do_sample": True, "seed": 3, "top_p": 0.9}
    for request_id in ("a", "b"):
        harness.submit(request_id, PROMPT, max_new_tokens=12, sampling=sampled,
                       stopping={"ignore_eos_token": True})
    assert token_ids(harness.collect("a")) == token_ids(harness.collect("b"))


def test_cuda_fp32_greedy_matches_transformers(harness_factory, tiny_model_dir):
    harness = harness_factory("--device", "cuda", "--dtype", "float32")
    harness.submit("a", PROMPT, max_new_tokens=16, stopping={"ignore_eos_token": True})
    assert token_ids(harness.collect("a")) == hf_greedy(tiny_model_dir, PROMPT, 16)
