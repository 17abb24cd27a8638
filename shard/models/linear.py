"""Linear layers for the fast path.

On CPU, weights are prepacked once for oneDNN. That is faster than a plain matmul at
1–128 rows in bf16 (README, "Benchmarks"). It also gives each row the same result whatever the
batch size, so batching never changes a greedy output.

With `int4`, each weight also gets a 4-bit copy with one scale and one zero per group
of 32 inputs. That is the layout of the GGUF Q4_1 tensors the default model ships in,
so the 4-bit values are the file's own. torch's kernel rebuilds each weight in bf16 from
bf16 scale and zero, though: against the dequantized weights its products are off by up
to about 3% of the largest output (0.3% is bf16's own rounding). Decode with few rows is
bound by reading the weights, so steps with at most `max_int4_rows` rows use the 4-bit
copy, which is a quarter of the bytes. Larger steps are compute-bound and use the
bf16/fp32 GEMM. (A 4-bit kernel of our own was closer to the dequantized weights but
slower at one row, so torch's stays: README, "What stands in the way".)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

INT4_GROUP_SIZE = 32


class Linear:
    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, device: torch.device,
                 bias: torch.Tensor | None = None, max_int4_rows: int = 0):
        weight = weight.detach().to(device=device, dtype=dtype).contiguous()
        self.bias = bias.detach().to(device=device, dtype=dtype) if bias is not None else None
        self._packed = None
        self._int4 = None
        self.max_int4_rows = max_int4_rows
        on_cpu = device.type == "cpu" and dtype in (torch.float32, torch.bfloat16)
        self.weight = weight
        if on_cpu and torch.backends.mkldnn.is_available():
            self._packed = _prepack(weight)
            if self._packed is not None:
                del self.weight
        if max_int4_rows and on_cpu and weight.shape[1] % INT4_GROUP_SIZE == 0:
            self._int4 = _quantize_int4(weight, dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._int4 is not None and x.shape[0] <= self.max_int4_rows:
            packed, scales_and_zeros = self._int4
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, INT4_GROUP_SIZE,
                                                            scales_and_zeros)
            return out if self.bias is None else out + self.bias
        if self._packed is not None:
            if x.shape[0] == 1:
                # oneDNN's one-row kernel sums in another order than its GEMM (rarely
                # visible after bf16 rounding, but enough to change a greedy token):
                # two rows keep a lone request's result identical to the batched one.
                return self._packed_mm(x.expand(2, -1))[:1]
            return self._packed_mm(x)
        return F.linear(x, self.weight, self.bias)


    def _packed_mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")


def _prepack(weight: torch.Tensor) -> torch.Tensor | None:
    """The oneDNN layout, or None where this CPU lacks its kernel (oneDNN's bf16 GEMM needs
    AVX-512 or AVX-NE-CONVERT; an AVX2-only CPU then uses torch's plain bf16 matmul)."""
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, 1)
    except RuntimeError:
        return None


def _quantize_int4(weight: torch.Tensor, dtype: torch.dtype):
    """Asymmetric 4-bit groups: w = (q - 8) * scale + zero, q in 0..15 (torch's layout)."""
    out_features, in_features = weight.shape
    groups = weight.float().view(out_features, in_features // INT4_GROUP_SIZE, INT4_GROUP_SIZE)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round((groups - low) / scale).clamp(0, 15).to(torch.int32)
    zero = low + 8 * scale
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        q.view(out_features, in_features), 1)
    scales_and_zeros = torch.cat([scale, zero], -1).transpose(0, 1).contiguous().to(dtype)
    return packed, scales_and_zeros
