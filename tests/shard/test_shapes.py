"""Named shapes for --load-format dummy: random weights in a real model's shape."""
from __future__ import annotations

import json

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from shard.shapes import SHAPES
from tests.shard.conftest import Harness


def test_llama_8b_shape_has_llama_3_1_8b_parameter_count(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SHAPES["llama3.1-8b"]))
    with torch.device("meta"):                      # no memory: only the parameter count
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tmp_path))
    num_params = sum(p.numel() for p in model.parameters())
    assert 8.02e9 < num_params < 8.04e9             # Llama-3.1-8B: 8,030,261,248


def test_smollm2_shape_has_the_real_models_parameter_count(tmp_path, default_model_dir):
    (tmp_path / "config.json").write_text(json.dumps(SHAPES["smollm2-135m"]))
    with torch.device("meta"):
        shape = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tmp_path))
        real = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(default_model_dir))
    assert sum(p.numel() for p in shape.parameters()) == sum(p.numel() for p in real.parameters())


def test_a_named_shape_serves_tokens_with_random_weights():
    harness = Harness("smollm2-135m", "--load-format", "dummy")
    try:
        assert harness.info.model_id == "smollm2-135m"
        harness.submit("a", [1, 2, 3, 4], max_new_tokens=5, stopping={"ignore_eos_token": True})
        events = harness.collect("a")
        assert len(events) == 5 and events[-1].finished is not None
    finally:
        harness.close()
