"""sluice's own CPU kernels (shard/csrc/cpu_kernels.c): compiled once per source, compiler
and CPU into the cache directory, loaded with ctypes, called on tensors' memory.

Compiling takes under a second with the system's gcc. Where there is no compiler, or the
CPU lacks AVX-512, `load()` returns None and backends.select_backend keeps to torch's ops.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "cpu_kernels.c"
# No contraction into FMAs: the element-wise kernels round exactly as torch's separate ops.
FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC")
MAX_GROUP, MAX_HEAD_DIM, Q8_MAX_ROWS = 16, 256, 8     # as in the C source
Q8_GROUP_SIZE = 32

_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_SIGNATURES = {
    "decode_attention": [_P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _F],
    "rope_write": [_P, _P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I],
    "add_rms_norm": [_P, _P, _P, _P, _I, _I, _F],
    "silu_mul": [_P, _P, _I, _I],
    "greedy": [_P, _I, _I, _P, _P],
    "q8_matmul": [_P, _P, _P, _P, _I, _I, _I],
}
_SUFFIXES = {torch.bfloat16: "bf16", torch.float32: "f32"}


class CpuKernels:
    def __init__(self, library: ctypes.CDLL):
        self.functions = {}
        for name, argtypes in _SIGNATURES.items():
            for dtype, suffix in _SUFFIXES.items():
                function = getattr(library, f"{name}_{suffix}")
                function.argtypes, function.restype = argtypes, None
                self.functions[name, dtype] = function
        self._set_num_threads = library.set_num_threads
        self._set_num_threads.argtypes, self._set_num_threads.restype = [_I], None

    def set_num_threads(self, num_threads: int) -> None:
        """Torch and these kernels may hold separate OpenMP runtimes: both are told."""
        torch.set_num_threads(num_threads)
        self._set_num_threads(num_threads)

    @staticmethod
    def supports(num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 widths: tuple[int, ...] = ()) -> bool:
        """`widths`: the hidden and MLP sizes, which the element-wise kernels take in
        vectors of 16."""
        return (dtype in (torch.bfloat16, torch.float32) and num_heads % num_kv_heads == 0
                and num_heads // num_kv_heads <= MAX_GROUP
                and head_dim % 16 == 0 and head_dim <= MAX_HEAD_DIM
                and all(width % 16 == 0 for width in widths))

    def decode_attention(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                         slots: torch.Tensor, lengths: torch.Tensor, out: torch.Tensor) -> None:
        """q, out: [tokens, heads, dim]; keys/values: one layer's cache [slots, kv heads, len,
        dim]; token i attends to positions [0, lengths[i]) of slot slots[i]."""
        q, slots, lengths = q.contiguous(), slots.contiguous().long(), lengths.contiguous().long()
        if not out.is_contiguous() or out.shape != q.shape or out.dtype != q.dtype:
            raise ValueError("decode_attention needs a contiguous output shaped like q")
        if keys.stride()[2:] != (q.shape[2], 1) or keys.stride() != values.stride():
            raise ValueError("decode_attention needs each cache position's head_dim contiguous")
        num_tokens, num_heads, head_dim = q.shape
        self.functions["decode_attention", q.dtype](
            q.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(), slots.data_ptr(),
            lengths.data_ptr(), num_tokens, num_heads, keys.shape[1], head_dim,
            keys.stride(0), keys.stride(1), head_dim ** -0.5)

    def greedy(self, logits: torch.Tensor) -> tuple[list[int], list[float]]:
        """Per row of [rows, vocab] logits: argmax and its log-softmax value."""
        logits = logits.contiguous()
        token_ids = torch.empty(logits.shape[0], dtype=torch.long)
        logprobs = torch.empty(logits.shape[0], dtype=torch.float32)
        self.functions["greedy", logits.dtype](logits.data_ptr(), logits.shape[0],
                                                logits.shape[1], token_ids.data_ptr(),
                                                logprobs.data_ptr())
        return token_ids.tolist(), logprobs.tolist()


    def q8_matmul(self, x: torch.Tensor, weight: Q8Weight) -> torch.Tensor:
        """x [rows <= Q8_MAX_ROWS, in] times an exact 8-bit copy of a weight [out, in]."""
        rows, in_features = x.shape
        if rows > Q8_MAX_ROWS:
            raise ValueError(f"q8_matmul takes at most {Q8_MAX_ROWS} rows")
        x = x.contiguous()
        out = x.new_empty(rows, weight.values.shape[0])
        self.functions["q8_matmul", x.dtype](
            x.data_ptr(), weight.values.data_ptr(), weight.scales.data_ptr(), out.data_ptr(),
            rows, in_features, out.shape[1])
        return out


@dataclass(frozen=True, slots=True)
class Q8Weight:
    values: torch.Tensor        # int8 [out, in]
    scales: torch.Tensor        # float32 [out, in / 32]

    @classmethod
    def exact(cls, weight: torch.Tensor) -> Q8Weight | None:
        """The 8-bit form of a weight that is on an 8-bit grid per 32 inputs already (it
        came from GGUF Q8_0), or None: this copy never changes a result."""
        if weight.dim() != 2 or weight.shape[1] % Q8_GROUP_SIZE:
            return None
        groups = weight.detach().float().view(weight.shape[0], -1, Q8_GROUP_SIZE)
        scales = groups.abs().amax(-1, keepdim=True) / 127
        values = torch.round(groups / scales.clamp_min(torch.finfo(torch.float32).tiny))
        if not torch.equal(values * scales, groups):
            return None
        return cls(values.to(torch.int8).view(weight.shape).contiguous(),
                   scales[..., 0].contiguous())


class KernelOps:
    """A decoder layer's element-wise steps through the compiled kernels; same interface
    as layer_ops.TorchOps. Tensors must be contiguous, as the model's own are."""

    def __init__(self, kernels: CpuKernels, eps: float):
        self._call = kernels.functions
        self.eps = eps

    def rms_norm(self, hidden, delta, weight):
        out = torch.empty_like(hidden)
        self._call["add_rms_norm", hidden.dtype](
            hidden.data_ptr(), None if delta is None else delta.data_ptr(), weight.data_ptr(),
            out.data_ptr(), hidden.shape[0], hidden.shape[1], self.eps)
        return out

    def silu_mul(self, gate_up):
        out = gate_up.new_empty(gate_up.shape[0], gate_up.shape[1] // 2)
        self._call["silu_mul", gate_up.dtype](gate_up.data_ptr(), out.data_ptr(),
                                              out.shape[0], out.shape[1])
        return out

    def rope_write(self, qkv, cos, sin, cache, layer, step, num_heads):
        keys, values = cache.layer(layer)
        num_tokens, (num_kv_heads, head_dim) = qkv.shape[0], keys.shape[1::2]
        q = qkv.new_empty(num_tokens, num_heads, head_dim)
        self._call["rope_write", qkv.dtype](
            qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), q.data_ptr(), keys.data_ptr(),
            values.data_ptr(), step.slot_ids.data_ptr(), step.positions.data_ptr(), num_tokens,
            num_heads, num_kv_heads, head_dim, keys.stride(0), keys.stride(1))
        return q


def load(cache_dir: str | os.PathLike) -> CpuKernels | None:
    compiler = shutil.which(os.environ.get("CC", "gcc"))
    if compiler is None:
        log.info("no C compiler found: using torch's ops for attention")
        return None
    try:
        return CpuKernels(ctypes.CDLL(str(_build(compiler, Path(cache_dir)))))
    except (OSError, subprocess.CalledProcessError) as error:
        log.warning("sluice's CPU kernels are unavailable, using torch's ops: %s %s", error,
                    getattr(error, "stderr", "") or "")
        return None


def _build(compiler: str, cache_dir: Path) -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((compiler, *FLAGS)).encode()
                         + _cpu_identity().encode()).hexdigest()[:16]
    target = cache_dir / "kernels" / f"cpu_kernels-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: shards starting together never load a half file.
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE), "-lm"], check=True,
                       capture_output=True, text=True)
        built.replace(target)
    log.info("compiled sluice's CPU kernels into %s", target)
    return target


def _cpu_identity() -> str:
    """-march=native code is only valid on the CPU it was built for."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()
