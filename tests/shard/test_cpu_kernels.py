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
    assert not kernels.supports(9, 3, 64, torch.bfloat16, (576, 1540))  # MLP not in 16s


def _step_writing(slots, positions):
    from types import SimpleNamespace
    slot_ids, positions = torch.tensor(slots), torch.tensor(positions)
    return SimpleNamespace(slot_ids=slot_ids, positions=positions, kv_rows=None), slot_ids, positions


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rotary_and_cache_write_are_bit_identical_to_torch(kernels, dtype):
    from shard.kv_cache import CacheShape, KVCache
    from shard.models.cpu_kernels import KernelOps
    from shard.models.layer_ops import TorchOps

    torch.manual_seed(2)
    shape = CacheShape(num_layers=2, num_slots=4, num_kv_heads=3, max_total_tokens=32, head_dim=64)
    step, slot_ids, positions = _step_writing([2, 0, 0, 3], [7, 0, 1, 31])
    caches = []
    for ops in (TorchOps(1e-5), KernelOps(kernels, 1e-5)):
        cache = KVCache(shape, dtype, torch.device("cpu"))
        cache.keys.zero_(), cache.values.zero_()
        step.kv_rows = cache.rows(slot_ids, positions)
        qkv = torch.randn(4, (9 + 6) * 64, generator=torch.Generator().manual_seed(3)).to(dtype)
        angles = positions[:, None].float() * torch.rand(32, generator=torch.Generator().manual_seed(4))
        angles = torch.cat([angles, angles], -1)
        q = ops.rope_write(qkv, angles.cos().to(dtype), angles.sin().to(dtype), cache, 1, step, 9)
        caches.append((q, cache.keys[1].clone(), cache.values[1].clone()))
    for torch_result, kernel_result in zip(*caches):
        assert torch.equal(torch_result, kernel_result)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_residual_norm_and_silu_match_torch(kernels, dtype):
    from shard.models.cpu_kernels import KernelOps
    from shard.models.layer_ops import TorchOps

    torch.manual_seed(5)
    hidden, delta = torch.randn(5, 576).to(dtype), torch.randn(5, 576).to(dtype)
    weight, gate_up = torch.rand(576).to(dtype), (3 * torch.randn(5, 2 * 1536)).to(dtype)
    results = []
    for ops in (TorchOps(1e-5), KernelOps(kernels, 1e-5)):
        residual = hidden.clone()
        results.append((ops.rms_norm(residual, delta, weight), residual,
                        ops.rms_norm(hidden.clone(), None, weight), ops.silu_mul(gate_up)))
    (norm, residual, first_norm, silu), (k_norm, k_residual, k_first_norm, k_silu) = results
    assert torch.equal(residual, k_residual)          # the residual add rounds like torch's
    # The norm's sum and the kernels' exp run in another order than torch's: within an ulp.
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype is torch.float32 else dict(atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(k_norm, norm, **tolerance)
    torch.testing.assert_close(k_first_norm, first_norm, **tolerance)
    torch.testing.assert_close(k_silu, silu, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_pick_matches_argmax_and_log_softmax(kernels, dtype):
    torch.manual_seed(6)
    logits = (4 * torch.randn(5, 49157)).to(dtype)     # a vocabulary not a multiple of 16
    logits[1, 49156] = 100                             # the winner in the tail
    logits[2, 3] = logits[2, 9] = 100                  # a tie: the first index wins
    token_ids, logprobs = kernels.greedy(logits)
    assert token_ids == logits.float().argmax(-1).tolist()
    assert token_ids[1:3] == [49156, 3]
    expected = torch.log_softmax(logits.double(), -1).gather(1, torch.tensor(token_ids)[:, None])
    torch.testing.assert_close(torch.tensor(logprobs).double(), expected[:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_q8_matmul_equals_the_weight_it_holds_exactly(kernels, dtype):
    from shard.models.cpu_kernels import Q8Weight

    torch.manual_seed(7)
    values = torch.randint(-127, 128, (300, 96)).float()
    values[:, ::32] = 127                               # every group reaches the grid's end
    scales = (torch.rand(300, 3) / 100).half().float().repeat_interleave(32, 1)  # fp16, as GGUF
    weight = values * scales                            # as GGUF Q8_0 dequantizes
    q8 = Q8Weight.exact(weight)
    assert q8 is not None and Q8Weight.exact(weight + 1e-4) is None
    for rows in (1, 3, 8):
        x = torch.randn(rows, 96).to(dtype)
        expected = x.double() @ weight.double().T
        torch.testing.assert_close(kernels.q8_matmul(x, q8).double(), expected,
                                   atol=1e-4 if dtype is torch.float32 else 2e-2, rtol=1e-2)


def test_kernel_backend_decode_attention_matches_the_torch_backend(kernels):
    """Both decode layouts over one cache, with holes in the slots as requests leave."""
    from types import SimpleNamespace

    from shard.kv_cache import CacheShape, KVCache
    from shard.models.backends import CpuKernelBackend, TorchBackend

    torch.manual_seed(8)
    cpu = torch.device("cpu")
    shape = CacheShape(num_layers=2, num_slots=6, num_kv_heads=3, max_total_tokens=40, head_dim=64)
    cache = KVCache(shape, torch.float32, cpu)
    cache.keys.normal_(), cache.values.normal_()
    step = SimpleNamespace(decode_slots=(0, 2, 5), decode_positions=(3, 39, 0))
    q = torch.randn(3, 9, 64)
    outs = []
    for backend in (TorchBackend(1e-5, cpu), CpuKernelBackend(kernels, 1e-5, cpu)):
        out = torch.empty_like(q)
        backend.decode_attention(1, q, backend.decode_layout(step), cache, out)
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)


def test_select_backend_takes_the_kernels_only_where_asked_and_fit(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from shard.models import backends

    stand_in = SimpleNamespace(supports=cpu_kernels.CpuKernels.supports, functions={},
                               greedy=None, set_num_threads=None)
    monkeypatch.setattr(backends.cpu_kernels, "load", lambda cache_dir: stand_in)
    config = SimpleNamespace(num_attention_heads=9, num_key_value_heads=3, hidden_size=576,
                             intermediate_size=1536, rms_norm_eps=1e-5)
    cpu = torch.device("cpu")

    def chosen(device=cpu, dtype=torch.bfloat16, use_kernels=True):
        return type(backends.select_backend(config, device, dtype, use_kernels, tmp_path))

    assert chosen() is backends.CpuKernelBackend
    assert chosen(use_kernels=False) is backends.TorchBackend
    assert chosen(dtype=torch.float16) is backends.TorchBackend
    assert chosen(device=torch.device("cuda")) is backends.TorchBackend
