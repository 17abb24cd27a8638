"""Preallocated KV cache: one row (slot) per running request, `max_total_tokens` positions each.

A request joining or leaving the batch is bookkeeping in `SlotAllocator`; no running
request's KV is ever moved. The one copy is prefix reuse (`copy_prefix`), into a new
request's slot. Pages are only touched as positions are written, so resident memory
follows the tokens actually held, bounded by --max-batch-total-tokens.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from dataclasses import dataclass

import torch

MADV_NOHUGEPAGE = 15


@dataclass(frozen=True, slots=True)
class CacheShape:
    num_layers: int
    num_slots: int
    num_kv_heads: int
    max_total_tokens: int
    head_dim: int


class KVCache:
    def __init__(self, shape: CacheShape, dtype: torch.dtype, device: torch.device):
        self.shape = shape
        size = (shape.num_layers, shape.num_slots, shape.num_kv_heads, shape.max_total_tokens,
                shape.head_dim)
        # torch.empty: untouched positions stay unbacked by physical memory on CPU.
        self.keys = torch.empty(size, dtype=dtype, device=device)
        self.values = torch.empty(size, dtype=dtype, device=device)
        if device.type == "cpu":
            _small_pages(self.keys), _small_pages(self.values)

    def rows(self, slot_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Flat row of every (token, kv head) in one layer's [slots*heads*len, dim] view;
        computed once per step and shared by all layers."""
        heads = torch.arange(self.shape.num_kv_heads, device=slot_ids.device)
        per_slot = slot_ids[:, None] * self.shape.num_kv_heads + heads[None, :]
        return (per_slot * self.shape.max_total_tokens + positions[:, None]).reshape(-1)

    def write(self, layer: int, rows: torch.Tensor, keys: torch.Tensor,
              values: torch.Tensor) -> None:
        """keys/values: [num_tokens, num_kv_heads, head_dim]; `rows` from rows()."""
        dim = self.shape.head_dim
        self.keys[layer].view(-1, dim).index_copy_(0, rows, keys.reshape(-1, dim))
        self.values[layer].view(-1, dim).index_copy_(0, rows, values.reshape(-1, dim))

    def span(self, layer: int, num_slots: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of slots [0, num_slots) and positions [0, length): no copy."""
        return (self.keys[layer, :num_slots, :, :length],
                self.values[layer, :num_slots, :, :length])

    def copy_prefix(self, source_slot: int, target_slot: int, num_tokens: int) -> None:
        """Positions [0, num_tokens) of one slot into another, every layer at once."""
        for tensor in (self.keys, self.values):
            tensor[:, target_slot, :, :num_tokens] = tensor[:, source_slot, :, :num_tokens]

    def layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[layer], self.values[layer]

    def slot(self, layer: int, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.keys[layer, slot, :, :length], self.values[layer, slot, :, :length])


def _small_pages(tensor: torch.Tensor) -> None:
    """The shard backs large tensors with 2 MB pages (shard/__main__.py). Not the cache:
    one 2 MB page would hold a few requests' whole rows, so the first token written would
    make them resident. With 4 KB pages, memory follows the tokens actually held."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    start = tensor.data_ptr() // mmap.PAGESIZE * mmap.PAGESIZE
    length = tensor.data_ptr() + tensor.numel() * tensor.element_size() - start
    libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_NOHUGEPAGE)
