"""shard/sampling.py with values at and past float32's limits, in one batch with ordinary
rows: each row gets the answer it would get alone, a tiny temperature or penalty its limit,
and a row whose values leave no token an error of its own instead of failing the batch.
Logits that are not finite are the model's failure, and still the step's."""
from __future__ import annotations

import math

import pytest
import torch

from shard.sampling import RowRequest, sample
from shard.sequence import SamplingParams

SUBNORMAL = 1.401298464324817e-45  # float32's smallest
HISTORY = list(range(0, 40, 3))


def row(seed: int = 0, **params) -> RowRequest:
    sampling = SamplingParams(**params)
    generator = None if sampling.is_greedy else torch.Generator().manual_seed(seed)
    history = HISTORY if sampling.needs_penalties or sampling.watermark else None
    return RowRequest(sampling, history, generator, top_n_tokens=2, num_prompt=5)


def penalised_argmax(logits: torch.Tensor, penalty: float) -> int:
    """The repetition penalty's limit, in float64: no overflow on the way."""
    row64, seen = logits.double().clone(), torch.tensor(HISTORY)
    row64[seen] = torch.where(row64[seen] < 0, row64[seen] * penalty, row64[seen] / penalty)
    return int(row64.argmax())


def test_extreme_values_sample_their_limit_and_a_broken_row_fails_alone():
    torch.manual_seed(0)
    logits = torch.randn(7, 64) * 30  # logits / 1e-38 overflow float32 from about 4
    ordinary = [row(1, do_sample=True, temperature=0.7, top_p=0.9), row(repetition_penalty=1.3)]
    extreme = [row(2, do_sample=True, temperature=SUBNORMAL), row(repetition_penalty=SUBNORMAL),
               row(3, do_sample=True, repetition_penalty=2.0 ** -126, temperature=2.0 ** -126),
               row(4, do_sample=True, temperature=math.nan), row(5, do_sample=True, repetition_penalty=math.inf)]
    batch = sample(logits, ordinary[:1] + extreme + ordinary[1:])
    alone = [sample(logits[i:i + 1], [r]) for i, r in ((0, row(1, do_sample=True, temperature=0.7, top_p=0.9)),
                                                     (6, row(repetition_penalty=1.3)))]
    for index, single in zip((0, 6), alone):
        assert batch.token_ids[index] == single.token_ids[0] and batch.logprobs[index] == single.logprobs[0]
        assert batch.errors[index] is None
    assert batch.token_ids[1] == int(logits[1].argmax())  # temperature -> 0: greedy
    assert batch.token_ids[2] == penalised_argmax(logits[2], SUBNORMAL)
    assert batch.token_ids[3] == penalised_argmax(logits[3], 2.0 ** -126)
    assert all(math.isfinite(batch.logprobs[i]) and batch.errors[i] is None for i in (1, 2, 3))
    assert batch.errors[4] is not None and "sampling failed" in batch.errors[4]  # NaN temperature
    assert batch.errors[5] is None and math.isfinite(batch.logprobs[5])  # inf penalty: a distribution still


def test_non_finite_logits_from_the_model_are_the_steps_failure():
    """Not a request's values: the engine then re-runs the step one request at a time."""
    for bad in (math.nan, math.inf):
        logits = torch.randn(2, 32)
        logits[1, 5] = bad
        with pytest.raises(FloatingPointError, match="not finite"):
            sample(logits, [row(1, do_sample=True), row(repetition_penalty=1.2)])
