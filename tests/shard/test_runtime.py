"""Startup decisions: the 4-bit copy is used only where it is exact and supported."""
from __future__ import annotations

import pytest
import torch

from shard.config import from_args
from shard.loader import ModelSource, resolve
from shard.runtime import MAX_INT4_ROWS, int4_rows

CPU = torch.device("cpu")


def test_auto_uses_int4_for_the_4_bit_gguf_in_bf16_only(default_model_dir, tiny_model_dir):
    config = from_args([])
    gguf_source = resolve(None, config.cache_dir)
    assert gguf_source.gguf_file is not None
    assert int4_rows(config, torch.bfloat16, CPU, gguf_source) == MAX_INT4_ROWS
    assert int4_rows(config, torch.float32, CPU, gguf_source) == 0      # fp32: the reference
    plain = ModelSource("tiny", tiny_model_dir)                          # no GGUF behind it
    assert int4_rows(config, torch.bfloat16, CPU, plain) == 0
    assert int4_rows(from_args(["--quantize", "none"]), torch.bfloat16, CPU, gguf_source) == 0


def test_explicit_int4_where_it_cannot_run_is_a_startup_error(tiny_model_dir):
    config = from_args(["--quantize", "int4"])
    with pytest.raises(ValueError, match="needs --device cpu and --dtype bfloat16"):
        int4_rows(config, torch.float32, CPU, ModelSource("tiny", tiny_model_dir))
