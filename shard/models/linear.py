"""Linear layers for the fast path. On CPU the weight is prepacked once for oneDNN, which
is faster than a plain matmul here (about 1.3x at 1-128 rows in bf16) and gives each row
the same result whatever the batch size, so batching never changes a greedy output."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class Linear:
    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, device: torch.device,
                 bias: torch.Tensor | None = None):
        weight = weight.detach().to(device=device, dtype=dtype).contiguous()
        self.bias = bias.detach().to(device=device, dtype=dtype) if bias is not None else None
        self.out_features = weight.shape[0]
        self._packed = None
        if device.type == "cpu" and torch.backends.mkldnn.is_available() and dtype in (
                torch.float32, torch.bfloat16):
            self._packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        else:
            self.weight = weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)
