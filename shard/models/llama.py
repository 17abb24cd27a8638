"""Fast path for the Llama family (SmolLM2, Llama, Qwen2, Mistral): a plain-tensor forward
over a flat list of tokens from many requests, writing into the slot KV cache.

Decode tokens (one per request) attend through the backend (backends.py): sluice's CPU
kernel, each reading its own slot, or one masked SDPA view of the cache rows [0, span).
Prompt chunks attend one request at a time. Linear layers see every token of the step at
once, which is where batching pays on both CPU and GPU. The backend also does the
element-wise steps between them, the lm_head and (in the runner) the greedy pick.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from shard.kv_cache import KVCache
from shard.models.linear import Linear

if TYPE_CHECKING:
    from shard.models.backends import Backend

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})


def head_dim(cfg) -> int:
    """Older configs leave it out."""
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


@dataclass(frozen=True, slots=True)
class PrefillSpan:
    offset: int          # first row of this chunk in the step's token list
    num_tokens: int
    slot: int
    start: int           # position of the chunk's first token


@dataclass(frozen=True, slots=True)
class StepInputs:
    """Tensors for one forward. Rows [0, num_decode) are decode tokens, one per request."""
    input_ids: torch.Tensor        # [T]
    positions: torch.Tensor        # [T]
    slot_ids: torch.Tensor         # [T] cache slot of each token
    kv_rows: torch.Tensor          # [T * kv heads] where each token's K/V go (KVCache.rows)
    num_decode: int
    decode_slots: tuple[int, ...]  # cache slot of each decode token, ascending
    decode_positions: tuple[int, ...]
    prefills: tuple[PrefillSpan, ...]
    logits_rows: torch.Tensor      # rows whose next-token logits are needed


@dataclass(frozen=True, slots=True)
class LayerWeights:
    in_norm: torch.Tensor
    qkv: Linear
    o: Linear
    post_norm: torch.Tensor
    gate_up: Linear
    down: Linear


class LlamaModel:
    def __init__(self, hf_model, dtype: torch.dtype, device: torch.device,
                 max_int4_rows: int, backend: Backend):
        cfg = hf_model.config
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = head_dim(cfg)
        self.max_position = cfg.max_position_embeddings
        self.vocab_size = cfg.vocab_size
        self.backend = backend
        self._load_weights(hf_model.model, hf_model.lm_head, dtype, device, max_int4_rows)
        self.rope = self._rope_params(hf_model, device)

    def _load_weights(self, model, lm_head, dtype, device, max_int4_rows) -> None:
        def v(w):
            return w.detach().to(device=device, dtype=dtype).contiguous()

        self.embed = v(model.embed_tokens.weight)
        self.lm_head = self.backend.build_lm_head(lm_head.weight, dtype, device, max_int4_rows)
        self.final_norm = v(model.norm.weight)
        self.layers = []
        for layer in model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            bias = None
            if attn.q_proj.bias is not None:
                bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
            def linear(weight, bias=None):
                return Linear(weight, dtype, device, bias, max_int4_rows)

            self.layers.append(LayerWeights(
                v(layer.input_layernorm.weight), linear(qkv, bias), linear(attn.o_proj.weight),
                v(layer.post_attention_layernorm.weight),
                linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
                linear(mlp.down_proj.weight)))

    def _rope_params(self, hf_model, device) -> tuple[torch.Tensor, float]:
        # Reuse transformers' own RoPE initialisation so scaled variants (llama3) match.
        rotary = hf_model.model.rotary_emb
        return (rotary.inv_freq.detach().float().to(device), float(rotary.attention_scaling))

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos and sin, [T, head_dim] each, shared by every layer of the step."""
        inv_freq, scaling = self.rope
        freqs = positions.float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)

    @torch.inference_mode()
    def forward(self, step: StepInputs, cache: KVCache) -> torch.Tensor:
        """Returns the final hidden states of `step.logits_rows`."""
        hidden = self.embed[step.input_ids]
        cos, sin = self._rope(step.positions, hidden.dtype)
        backend = self.backend
        decode = backend.decode_layout(step) if step.num_decode else None
        x = backend.rms_norm(hidden, None, self.layers[0].in_norm)
        next_norms = [layer.in_norm for layer in self.layers[1:]] + [self.final_norm]
        for index, (weights, next_norm) in enumerate(zip(self.layers, next_norms)):
            q = backend.rope_write(weights.qkv(x), cos, sin, cache, index, step, self.num_heads)
            attention = self._attention(index, q, step, decode, cache)
            x = backend.rms_norm(hidden, weights.o(attention.view(q.shape[0], -1)),
                                 weights.post_norm)
            mlp = weights.down(backend.silu_mul(weights.gate_up(x)))
            x = backend.rms_norm(hidden, mlp, next_norm)  # the next layer's input norm, or final
        return x[step.logits_rows]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """In the model's dtype; sampling converts to float32 where it needs to."""
        return self.lm_head(hidden)

    def _attention(self, index, q, step, decode, cache) -> torch.Tensor:
        out = torch.empty_like(q)
        if decode is not None:
            rows = slice(0, step.num_decode)
            self.backend.decode_attention(index, q[rows], decode, cache, out[rows])
        for span in step.prefills:
            rows = slice(span.offset, span.offset + span.num_tokens)
            out[rows] = self._prefill_attention(index, q[rows], span, cache)
        return out

    def _prefill_attention(self, index, q, span: PrefillSpan, cache: KVCache) -> torch.Tensor:
        end = span.start + span.num_tokens
        keys, values = cache.slot(index, span.slot, end)
        q = q.transpose(0, 1).unsqueeze(0)                     # [1, heads, n, dim]
        if span.start == 0:
            out = F.scaled_dot_product_attention(q, keys[None], values[None], is_causal=True,
                                                 enable_gqa=True)
        else:
            query_pos = torch.arange(span.start, end, device=q.device)[:, None]
            mask = torch.arange(end, device=q.device)[None, :] <= query_pos
            out = F.scaled_dot_product_attention(q, keys[None], values[None], attn_mask=mask,
                                                 enable_gqa=True)
        return out[0].transpose(0, 1)
