"""The fast path's linear layers: prepacked oneDNN weights and the 4-bit copy."""
from __future__ import annotations

import pytest
import torch

from shard.models.linear import Linear

CPU = torch.device("cpu")


def q4_1_weight(out_features: int = 64, in_features: int = 128) -> torch.Tensor:
    """Weights on a GGUF Q4_1 grid: w = d * q + m per group of 32, q in 0..15."""
    torch.manual_seed(0)
    groups = in_features // 32
    d = torch.rand(out_features, groups, 1) * 0.1
    m = -torch.rand(out_features, groups, 1)
    q = torch.randint(0, 16, (out_features, groups, 32))
    q[..., 0], q[..., 1] = 0, 15               # Q4_1 maps each group's min to 0, max to 15
    return (q * d + m).view(out_features, in_features)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_matches_matmul_and_is_row_invariant(dtype):
    weight = torch.randn(96, 64)
    linear = Linear(weight, dtype, CPU)
    x = torch.randn(40, 64, dtype=dtype)
    full = linear(x)
    torch.testing.assert_close(full.float(), (x.float() @ weight.to(dtype).float().t()),
                               rtol=2e-2, atol=2e-2)
    for rows in (1, 2, 7, 33):
        assert torch.equal(linear(x[:rows]), full[:rows])
        assert torch.equal(linear(x[rows:]), full[rows:])      # also away from the first row


def test_int4_copy_of_q4_1_weights_is_lossless_and_used_for_few_rows():
    weight = q4_1_weight()
    linear = Linear(weight, torch.bfloat16, CPU, max_int4_rows=4)
    dense = Linear(weight, torch.bfloat16, CPU)
    x = torch.randn(8, 128, dtype=torch.bfloat16)
    reference = x.float() @ weight.t()
    few = linear(x[:4]).float()
    torch.testing.assert_close(few, reference[:4], rtol=2e-2, atol=5e-2)
    assert not torch.equal(few, dense(x[:4]).float())          # the 4-bit kernel ran
    assert torch.equal(linear(x), dense(x))                     # more rows: the bf16 GEMM
