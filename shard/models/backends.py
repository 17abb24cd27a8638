"""The one seam between the model and the code that computes it: a backend owns the
element-wise layer steps (layer_ops.TorchOps or cpu_kernels.KernelOps), decode attention
and its cache layout, the lm_head and the greedy pick. `select_backend` chooses one at
startup; the model then has a single path and never asks which backend it has.

TorchBackend runs anywhere torch does (CPUs without the compiled kernels, CUDA).
CpuKernelBackend uses sluice's kernels (shard/csrc) on AVX-512 CPUs, for shapes they
support. A GPU backend would be a third class with the same methods.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from shard.kv_cache import KVCache
from shard.models import cpu_kernels
from shard.models.cpu_kernels import Q8_MAX_ROWS, CpuKernels, KernelOps, Q8Weight
from shard.models.layer_ops import TorchOps
from shard.models.linear import Linear
from shard.models.llama import StepInputs, head_dim
from shard.sampling import greedy_pick


class Backend(Protocol):
    # A decoder layer's element-wise steps, as layer_ops.TorchOps documents them.
    def rms_norm(self, hidden, delta, weight) -> torch.Tensor: ...
    def silu_mul(self, gate_up) -> torch.Tensor: ...
    def rope_write(self, qkv, cos, sin, cache, layer, step, num_heads) -> torch.Tensor: ...

    # Decode attention: a layout built once per step, shared by every layer; out[i] gets
    # decode token i's attention over its own slot.
    def decode_layout(self, step: StepInputs): ...
    def decode_attention(self, layer: int, q: torch.Tensor, decode, cache: KVCache,
                         out: torch.Tensor) -> None: ...

    # [rows, hidden] -> [rows, vocab] logits, in the model's dtype.
    def build_lm_head(self, weight: torch.Tensor, dtype: torch.dtype, device: torch.device,
                      max_int4_rows: int): ...

    # Per row of logits that all sample plainly greedy: argmax and its logprob.
    def greedy(self, logits: torch.Tensor) -> tuple[list[int], list[float]]: ...

    # The compute team's size, from the thread that runs the forward (shard/threads.py).
    def set_num_threads(self, num_threads: int) -> None: ...


def select_backend(model_config, device: torch.device, dtype: torch.dtype,
                   use_kernels: bool, cache_dir: str | os.PathLike) -> Backend:
    """The compiled kernels where asked for, on CPU, built here and fit for the model's
    shapes (`use_kernels`: --kernels auto); torch's ops otherwise."""
    cfg, eps = model_config, model_config.rms_norm_eps
    kernels = cpu_kernels.load(cache_dir) if use_kernels and device.type == "cpu" else None
    if kernels is not None and kernels.supports(
            cfg.num_attention_heads, cfg.num_key_value_heads, head_dim(cfg), dtype,
            (cfg.hidden_size, cfg.intermediate_size)):
        return CpuKernelBackend(kernels, eps, device)
    return TorchBackend(eps, device)


@dataclass(frozen=True, slots=True)
class MaskedSpan:
    """Decode attention through SDPA: one masked view of cache slots [0, span)."""
    span: int
    rows: torch.Tensor | None      # [num_decode] slot of each token where the span has holes
    mask: torch.Tensor             # [span, 1, 1, length] True = attend

    @classmethod
    def of(cls, step: StepInputs, device: torch.device) -> MaskedSpan:
        slots = list(step.decode_slots)
        span, length = slots[-1] + 1, max(step.decode_positions) + 1
        limits = torch.zeros(span, dtype=torch.long)
        limits[slots] = torch.tensor(step.decode_positions)
        # Row r attends to positions <= its own; hole rows attend to position 0 only.
        mask = (torch.arange(length)[None, :] <= limits[:, None])[:, None, None, :]
        rows = None if slots == list(range(span)) else torch.tensor(slots, device=device)
        return cls(span, rows, mask.to(device))


@dataclass(frozen=True, slots=True)
class SlotLengths:
    """Decode attention through the CPU kernel: each token reads its own slot."""
    slots: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def of(cls, step: StepInputs, device: torch.device) -> SlotLengths:
        return cls(torch.tensor(step.decode_slots, device=device),
                   torch.tensor(step.decode_positions, device=device) + 1)


class TorchBackend(TorchOps):
    """torch's ops on any device; decode attention through one masked SDPA call."""

    def __init__(self, eps: float, device: torch.device):
        super().__init__(eps)
        self.device = device

    def decode_layout(self, step: StepInputs) -> MaskedSpan:
        return MaskedSpan.of(step, self.device)

    @staticmethod
    def decode_attention(layer: int, q: torch.Tensor, decode: MaskedSpan, cache: KVCache,
                         out: torch.Tensor) -> None:
        """q, out: [decode tokens, heads, dim], one token per slot."""
        # Fold each KV head's query group into the "query length" axis: plain attention
        # with no head repetition, over a strided view of the cache (no copy).
        num_heads, dim = q.shape[1:]
        num_kv_heads = cache.shape.num_kv_heads
        q = q.view(-1, num_kv_heads, num_heads // num_kv_heads, dim)
        if decode.rows is not None:  # holes in the span: scatter into cache-row order
            q = q.new_zeros(decode.span, *q.shape[1:]).index_copy_(0, decode.rows, q)
        keys, values = cache.span(layer, decode.span, decode.mask.shape[-1])
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=decode.mask)
        if decode.rows is not None:
            attended = attended.index_select(0, decode.rows)
        out.copy_(attended.reshape(-1, num_heads, dim))

    @staticmethod
    def build_lm_head(weight: torch.Tensor, dtype: torch.dtype, device: torch.device,
                      max_int4_rows: int) -> Linear:
        return Linear(weight, dtype, device)

    greedy = staticmethod(greedy_pick)
    set_num_threads = staticmethod(torch.set_num_threads)


class CpuKernelBackend(KernelOps):
    """sluice's compiled kernels, for the ops they cover; linear layers stay torch's."""

    def __init__(self, kernels: CpuKernels, eps: float, device: torch.device):
        super().__init__(kernels, eps)
        self.kernels = kernels
        self.device = device
        self.greedy = kernels.greedy
        self.set_num_threads = kernels.set_num_threads

    def decode_layout(self, step: StepInputs) -> SlotLengths:
        return SlotLengths.of(step, self.device)

    def decode_attention(self, layer: int, q: torch.Tensor, decode: SlotLengths,
                         cache: KVCache, out: torch.Tensor) -> None:
        keys, values = cache.layer(layer)
        self.kernels.decode_attention(q, keys, values, decode.slots, decode.lengths, out)

    def build_lm_head(self, weight: torch.Tensor, dtype: torch.dtype, device: torch.device,
                      max_int4_rows: int) -> Linear | Q8LmHead:
        # Few-row steps read compact weights (see Linear); the embeddings the lm_head is
        # tied to come as GGUF Q8_0, which an 8-bit copy holds exactly.
        linear = Linear(weight, dtype, device)
        q8 = Q8Weight.exact(weight) if max_int4_rows else None
        if q8 is None:
            return linear
        return Q8LmHead(self.kernels, q8, linear, min(max_int4_rows, Q8_MAX_ROWS))


class Q8LmHead:
    """Steps of at most `max_rows` rows through the exact 8-bit copy, larger ones through
    the Linear."""

    def __init__(self, kernels: CpuKernels, q8: Q8Weight, linear: Linear, max_rows: int):
        self.kernels, self.q8, self.linear, self.max_rows = kernels, q8, linear, max_rows

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[0] <= self.max_rows:
            return self.kernels.q8_matmul(hidden, self.q8)
        return self.linear(hidden)
