"""Named model shapes for `--load-format dummy`: random weights in the shape of a model
that cannot be downloaded here, so that large shapes can be benchmarked (vLLM's idea).

`--model-id llama3.1-8b --load-format dummy` builds a model directory with the shape's
config.json and the default model's tokenizer (its ids are valid in any of these
vocabularies; generated ids past it decode to nothing).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

_LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
              attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2,
              torch_dtype="bfloat16")

SHAPES: dict[str, dict] = {
    "smollm2-135m": {**_LLAMA, "hidden_size": 576, "intermediate_size": 1536,
                     "num_hidden_layers": 30, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "vocab_size": 49152,
                     "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
                     "rope_theta": 100000.0, "tie_word_embeddings": True},
    "llama3.1-8b": {**_LLAMA, "hidden_size": 4096, "intermediate_size": 14336,
                    "num_hidden_layers": 32, "num_attention_heads": 32,
                    "num_key_value_heads": 8, "vocab_size": 128256,
                    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                    "rope_theta": 500000.0, "tie_word_embeddings": False,
                    "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192}},
}


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")


def shape_dir(name: str, cache_dir: Path, tokenizer_dir: Path) -> Path:
    """A model directory for the named shape, written once under the cache directory."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r} (known: {', '.join(sorted(SHAPES))})")
    target = cache_dir / "shapes" / name
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps(SHAPES[name], indent=2))
    for file in TOKENIZER_FILES:
        if (tokenizer_dir / file).is_file():
            shutil.copyfile(tokenizer_dir / file, target / file)
    return target
