"""sluice's compiled CPU kernels against torch's own ops on the same inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shard.models import cpu_kernels


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    loaded = cpu_kernels.load(tmp_path_factory.mktemp("kernels"))
    if loaded is None:  # the documented fallback: no gcc, or no AVX-512
        pytest.skip("sluice's CPU kernels cannot be built on this machine")
    return loaded


def reference_decode(q, keys, values, slots, lengths):
    """Each token alone through SDPA in float64."""
    group = q.shape[1] // keys.shape[1]
    out = []
    for token, (slot, length) in enumerate(zip(slots.tolist(), lengths.tolist())):
        k = keys[slot, :, :length].double().repeat_interleave(group, 0)
        v = values[slot, :, :length].double().repeat_interleave(group, 0)
        out.append(F.scaled_dot_product_attention(q[token, :, None].double(), k, v)[:, 0])
    return torch.stack(out)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("num_heads, num_kv_heads, head_dim", [(9, 3, 64), (4, 2, 16), (8, 8, 128)])
def test_decode_attention_matches_sdpa(kernels, dtype, tolerance, num_heads, num_kv_heads,
                                       head_dim):
    torch.manual_seed(0)
    keys = torch.randn(6, num_kv_heads, 300, head_dim, dtype=dtype)
    values = torch.randn_like(keys)
    slots = torch.tensor([0, 2, 3, 5])             # holes, as when requests have left
    lengths = torch.tensor([1, 17, 300, 64])       # one key, a partial vector, the full slot
    q = torch.randn(4, num_heads, head_dim, dtype=dtype)
    out = torch.empty_like(q)
    kernels.decode_attention(q, keys, values, slots, lengths, out)
    expected = reference_decode(q, keys, values, slots, lengths)
    torch.testing.assert_close(out.double(), expected, atol=tolerance, rtol=tolerance)


def test_decode_attention_row_does_not_depend_on_the_batch(kernels):
    torch.manual_seed(1)
    keys = torch.randn(8, 3, 128, 64, dtype=torch.bfloat16)
    values = torch.randn_like(keys)
    q = torch.randn(8, 9, 64, dtype=torch.bfloat16)
    lengths = torch.tensor([5, 128, 40, 77, 1, 90, 64, 33])
    batched = torch.empty_like(q)
    kernels.decode_attention(q, keys, values, torch.arange(8), lengths, batched)
    for row in range(8):
        alone = torch.empty_like(q[row:row + 1])
        kernels.decode_attention(q[row:row + 1], keys, values, torch.tensor([row]),
                                 lengths[row:row + 1], alone)
        assert torch.equal(alone[0], batched[row])


def test_unsupported_shapes_fall_back_to_torch(kernels):
    assert kernels.supports(9, 3, 64, torch.bfloat16)
    assert not kernels.supports(9, 3, 72, torch.bfloat16)      # head_dim not a multiple of 16
    assert not kernels.supports(64, 2, 64, torch.bfloat16)     # group of 32 queries
    assert not kernels.supports(9, 3, 64, torch.float16)
