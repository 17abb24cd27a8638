"""Assembles a shard from its config: device and precision checks, model, KV cache,
scheduler, runner and engine, and the grammar compiler beside them. Values decided here at
startup (cache size, limits) go into a CacheBudget; the config itself is never changed."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from shard import loader
from shard.config import ShardConfig
from shard.engine import Engine, Publish
from shard.grammar import GrammarCompiler
from shard.kv_cache import CacheShape, KVCache
from shard.metrics import ShardMetrics
from shard.model_runner import ModelRunner
from shard.models.backends import select_backend
from shard.models.llama import SUPPORTED_MODEL_TYPES, LlamaModel
from shard.prefix_cache import PrefixIndex
from shard.scheduler import Scheduler, SchedulerLimits
from shard.threads import ThreadGovernor, cgroup_cpu_limit, usable_cpus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CacheBudget:
    num_slots: int
    max_total_tokens: int
    max_batch_total_tokens: int
    max_batch_prefill_tokens: int


@dataclass(frozen=True, slots=True)
class ShardInfo:
    model_id: str
    dtype: str
    device: str
    model_dir: Path        # a HF model directory with tokenizer.json, on this host
    budget: CacheBudget


def resolve_device(config: ShardConfig) -> torch.device:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available "
                         f"(torch {torch.__version__}, built for CUDA: {torch.version.cuda})")
    return torch.device(config.device)


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(config: ShardConfig, device: torch.device) -> torch.dtype:
    if config.dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if _cpu_has_bf16() else torch.float32
    dtype = getattr(torch, config.dtype)
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("--dtype bfloat16 is not supported by this GPU; use float16")
    return dtype


# Shorter shared prefixes are recomputed: copying them saves too little.
MIN_PREFIX_TOKENS = 8

# Up to this many rows a step reads the 4-bit weights; above it the bf16 GEMM is faster.
MAX_INT4_ROWS = 4


def int4_rows(config: ShardConfig, dtype: torch.dtype, device: torch.device,
              source: loader.ModelSource) -> int:
    supported = device.type == "cpu" and dtype is torch.bfloat16
    if config.quantize == "auto":
        # Lossless only for weights that were 4-bit already; fp32 stays the reference.
        return MAX_INT4_ROWS if supported and loader.is_four_bit(source) else 0
    if config.quantize == "none":
        return 0
    if not supported:
        raise ValueError("--quantize int4 needs --device cpu and --dtype bfloat16")
    return MAX_INT4_ROWS


def plan_budget(config: ShardConfig, max_position: int, device: torch.device) -> CacheBudget:
    max_total = config.max_total_tokens or min(max_position, 4096)
    if max_total > max_position:
        raise ValueError(f"`max_total_tokens` ({max_total}) exceeds the model's context "
                         f"({max_position})")
    batch_total = config.max_batch_total_tokens or max(
        max_total, config.max_batch_size * max_total // 4)
    prefill = config.max_batch_prefill_tokens or (4096 if device.type == "cuda" else 512)
    if max_total > batch_total:
        raise ValueError(f"`max_total_tokens` must be <= `max_batch_total_tokens`. "
                         f"Given: {max_total} and {batch_total}")
    return CacheBudget(config.max_batch_size, max_total, batch_total, prefill)


def special_token_ids(tokenizer: Tokenizer) -> frozenset[int]:
    return frozenset(i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special)


def eos_token_ids(hf_model) -> frozenset[int]:
    ids = set()
    for cfg in (hf_model.config, getattr(hf_model, "generation_config", None)):
        value = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    return frozenset(ids)


def compute_threads(config: ShardConfig, device: torch.device, backend,
                    metrics: ShardMetrics) -> ThreadGovernor:
    """The team that runs the forward: --num-threads, else sized to the CPUs this process
    may use and resized to what other processes leave of them (shard/threads.py)."""
    def resize(num_threads: int) -> None:
        backend.set_num_threads(num_threads)
        metrics.compute_threads.set(num_threads)

    if device.type == "cpu":
        governor = ThreadGovernor(usable_cpus(limit=cgroup_cpu_limit()), resize, pinned=config.num_threads)
    else:   # the GPU computes; torch's CPU team only feeds it, and is not governed
        governor = ThreadGovernor(torch.get_num_threads(), resize,
                                  pinned=config.num_threads or torch.get_num_threads())
    # Resized only when it differs: setting torch's team, even to its default size, slowed
    # oneDNN's kernels (README, "Benchmarks").
    if config.num_threads or governor.num_threads != torch.get_num_threads():
        backend.set_num_threads(governor.num_threads)
    metrics.compute_threads.set(governor.num_threads)
    return governor


def build_engine(config: ShardConfig, publish: Publish, metrics: ShardMetrics):
    """Returns (engine, info). Loads the model; slow on first start (GGUF conversion)."""
    device = resolve_device(config)
    dtype = resolve_dtype(config, device)
    source = loader.resolve(config.model_id, config.cache_dir, config.load_format)
    hf_model = loader.load_hf_model(source, config.load_format)
    model_type = hf_model.config.model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model type {model_type!r} is not supported yet "
                         f"(supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))})")
    backend = select_backend(hf_model.config, device, dtype, config.kernels == "auto",
                             config.cache_dir)
    model = LlamaModel(hf_model, dtype, device, int4_rows(config, dtype, device, source), backend)
    budget = plan_budget(config, model.max_position, device)
    cache = KVCache(CacheShape(model.num_layers, budget.num_slots, model.num_kv_heads,
                               budget.max_total_tokens, model.head_dim), dtype, device)
    eos_ids = eos_token_ids(hf_model)
    del hf_model
    tokenizer = Tokenizer.from_file(str(source.path / "tokenizer.json"))
    limits = SchedulerLimits(config.max_batch_size, budget.max_batch_prefill_tokens,
                             budget.max_batch_total_tokens, budget.max_total_tokens,
                             config.waiting_served_ratio, config.max_waiting_tokens,
                             config.priority_aging_s)
    prefixes = None
    if config.prefix_caching == "on":
        prefixes = PrefixIndex(MIN_PREFIX_TOKENS)
    scheduler = Scheduler(limits, budget.num_slots, eos_ids, prefixes)
    runner = ModelRunner(model, cache, device, eos_ids, compute_threads(config, device, backend, metrics))
    engine = Engine(scheduler, runner, tokenizer, special_token_ids(tokenizer), publish, metrics,
                    model.vocab_size)
    info = ShardInfo(source.model_id, str(dtype).removeprefix("torch."), device.type,
                     source.path, budget)
    log.info("%s on %s in %s: %d slots x %d tokens, batch KV budget %d, prefill budget %d",
             info.model_id, info.device, info.dtype, budget.num_slots, budget.max_total_tokens,
             budget.max_batch_total_tokens, budget.max_batch_prefill_tokens)
    return engine, info


def build_grammar_compiler(engine: Engine, tokenizer_json: str) -> GrammarCompiler:
    """Grammars over the engine's tokenizer (`tokenizer_json`: its file's text, read once at
    start) and EOS ids; llguidance's tokenizer is built at the first grammar."""
    return GrammarCompiler(tokenizer_json, engine.scheduler.eos_token_ids, engine.vocab_size)
