"""Per step: which tokens each constrained row may pick, as one bool matrix for the sampler.
Only steps with a constrained row pay for it."""
from __future__ import annotations

import numpy
import torch

from shard.grammar import Constraint


def allowed_tokens(constraints: list[Constraint], width: int
                   ) -> tuple[torch.Tensor, list[str | None]]:
    """[len(constraints), width] bool, True where that row's grammar allows the token (ids
    the tokenizer lacks, padding of the logits, never are); and per row the error, if
    computing its mask broke the grammar."""
    # One tokenizer per shard: every constraint's mask has the same number of words.
    words = numpy.empty((len(constraints), constraints[0].num_mask_words), dtype=numpy.int32)
    errors = [c.write_mask(words[i]) for i, c in enumerate(constraints)]
    # Token t is bit t % 32 of word t // 32: bit t of the words' little-endian bytes.
    little = words.astype("<i4", copy=False).view(numpy.uint8)
    bits = numpy.unpackbits(little, axis=-1, bitorder="little",
                            count=min(width, words.shape[1] * 32))
    if bits.shape[1] < width:
        bits = numpy.pad(bits, ((0, 0), (0, width - bits.shape[1])))
    return torch.from_numpy(bits).view(torch.bool), errors
