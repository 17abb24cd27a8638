"""A decoder layer's element-wise steps with torch's own ops: RMS norm (after the residual
add), SiLU-gated MLP input, rotary embedding and the KV cache write. cpu_kernels.KernelOps
does the same steps fused, with the same interface."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class TorchOps:
    def __init__(self, eps: float):
        self.eps = eps

    def rms_norm(self, hidden: torch.Tensor, delta: torch.Tensor | None,
                 weight: torch.Tensor) -> torch.Tensor:
        """Adds `delta` into `hidden` in place (the residual), then normalises."""
        if delta is not None:
            hidden.add_(delta)
        return F.rms_norm(hidden, (hidden.shape[-1],), weight, self.eps)

    @staticmethod
    def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def rope_write(qkv, cos, sin, cache, layer, step, num_heads) -> torch.Tensor:
        """Rotates q and k, writes k and v to the cache; returns q [tokens, heads, dim]."""
        keys = cache.layer(layer)[0]
        num_kv_heads, head_dim = keys.shape[1], keys.shape[3]
        num_q, num_kv = num_heads * head_dim, num_kv_heads * head_dim
        q = qkv[:, :num_q].view(-1, num_heads, head_dim)
        k = qkv[:, num_q:num_q + num_kv].view(-1, num_kv_heads, head_dim)
        v = qkv[:, num_q + num_kv:].view(-1, num_kv_heads, head_dim)
        cos, sin = cos[:, None, :], sin[:, None, :]
        cache.write(layer, step.kv_rows, _rotate(k, cos, sin), v)
        return _rotate(q, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
