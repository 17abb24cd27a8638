"""Next-token choice: penalties, watermark, temperature and warpers, then greedy or seeded
sampling. Pure tensor functions over a [rows, vocab] float32 logits matrix.

Each sampling request draws from its own torch.Generator, so a seed gives the same output
whatever else shares the batch.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from shard.sequence import SamplingParams

log = logging.getLogger(__name__)

WATERMARK_GAMMA = 0.5
WATERMARK_DELTA = 2.0
WATERMARK_HASH_KEY = 15485863     # as TGI (Kirchenbauer et al.)


@dataclass(frozen=True, slots=True)
class RowRequest:
    params: SamplingParams
    history: list[int] | None        # prompt + generated ids; only when penalties/watermark need it
    generator: torch.Generator | None
    top_n_tokens: int
    num_prompt: int = 0              # history[num_prompt:] are the generated ids
    # (token id, added to its logit) before anything else sees the row: the request's
    # logit_bias, and -inf for EOS until min_new_tokens.
    bias: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Sampled:
    token_ids: list[int]
    logprobs: list[float]
    top_tokens: list[list[tuple[int, float]]]
    errors: list[str | None] | None = None   # per row: why it could not sample (None: it did)


@dataclass(frozen=True, slots=True)
class TokenMask:
    """Rows of the logits whose grammar limits the next token."""
    rows: list[int]
    allowed: torch.Tensor            # [len(rows), vocab] bool: True where the row may go


def greedy_pick(logits: torch.Tensor) -> tuple[list[int], list[float]]:
    """Per row: argmax and its log-softmax value, with no full log-softmax matrix."""
    logits = logits.float()
    token_ids = logits.argmax(dim=-1)
    chosen = logits.gather(1, token_ids[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
    return token_ids.tolist(), chosen.tolist()


def sample(logits: torch.Tensor, rows: list[RowRequest],
           greedy: Callable[[torch.Tensor], tuple[list[int], list[float]]] = greedy_pick,
           mask: TokenMask | None = None) -> Sampled:
    """`greedy` picks when every row is plain greedy, the common case: the backend's
    (one fused pass with the CPU kernels). Given finite logits, a row whose own sampling
    values leave nothing to choose fails alone (Sampled.errors). `mask` rules tokens out
    before anything else sees the logits; it writes -inf into `logits` itself."""
    if all(r.params.is_greedy and not _needs_processing(r.params) and not r.top_n_tokens
           for r in rows):
        return Sampled(*greedy(_apply_mask(_apply_bias(logits, rows), mask)), [[] for _ in rows])
    logits = logits.float()
    if not bool(torch.isfinite(logits).all()):
        # The model's fault, not a request's: the engine re-runs the step one request at a time.
        raise FloatingPointError("the model's logits are not finite")
    logits = _apply_mask(_apply_bias(logits, rows), mask)
    picks = [_pick_row(logits[i], r) for i, r in enumerate(rows)]
    logprobs = torch.stack([row_logprobs for row_logprobs, _ in picks])
    token_ids = torch.stack([token_id for _, token_id in picks])
    chosen = logprobs.gather(1, token_ids[:, None])[:, 0].tolist()
    # A chosen token has a finite logprob whenever its row held one: this check needs no sync
    # of its own, and it catches a row that broke without raising too (all NaN, say).
    errors = [None if math.isfinite(logprob) else NO_CHOICE for logprob in chosen]
    return Sampled(token_ids.tolist(), chosen, _top_tokens(logprobs, rows), errors)


def _apply_bias(logits: torch.Tensor, rows: list[RowRequest]) -> torch.Tensor:
    """Adds each row's bias to its logits, in place; ids past the logits are nobody's."""
    for i, r in enumerate(rows):
        bias = [(token_id, value) for token_id, value in r.bias if token_id < logits.shape[1]]
        if bias:
            ids = torch.tensor([token_id for token_id, _ in bias], device=logits.device)
            values = torch.tensor([value for _, value in bias], dtype=logits.dtype, device=logits.device)
            logits[i].index_add_(0, ids, values)
    return logits


def _apply_mask(logits: torch.Tensor, mask: TokenMask | None) -> torch.Tensor:
    if mask is None:
        return logits
    ruled_out = mask.allowed.to(logits.device).logical_not()
    if len(mask.rows) == logits.shape[0]:       # every row constrained: no gather
        return logits.masked_fill_(ruled_out, -math.inf)
    rows = torch.tensor(mask.rows, device=logits.device)
    logits[rows] = logits[rows].masked_fill_(ruled_out, -math.inf)
    return logits


NO_CHOICE = "sampling failed: this request's sampling parameters left no token with a finite logprob"


def _pick_row(row: torch.Tensor, r: RowRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """One row's logprobs and choice; NaN logprobs where this request's values broke it."""
    try:
        logprobs = torch.log_softmax(_process_row(row, r), dim=-1)
        return logprobs, _choose(logprobs, r)
    except (RuntimeError, ValueError):
        log.warning("sampling failed for one row: %s", r.params, exc_info=True)
        return torch.full_like(row, math.nan), torch.zeros((), dtype=torch.long, device=row.device)


def _needs_processing(params: SamplingParams) -> bool:
    return params.needs_penalties or params.watermark


def _process_row(row: torch.Tensor, r: RowRequest) -> torch.Tensor:
    p = r.params
    # float64 until the temperature is applied: a float32 logit divided by any normal float32
    # penalty or temperature stays finite there.
    row = row.double()
    if p.needs_penalties or p.watermark:
        history = torch.tensor(r.history, dtype=torch.long, device=row.device)
        row = _apply_penalties(row, history, r.num_prompt, p)
        if p.watermark:
            row = _apply_watermark(row, int(history[-1]))
    row = _top_at_zero(row)
    if not p.is_greedy and p.temperature != 1.0:
        # The top stays 0 and the rest only falls: a tiny temperature tends to greedy, -inf
        # below the top, instead of overflowing to inf and NaN. Shifting again covers a
        # negative one, which only a client that skips the router can send.
        row = _top_at_zero(row / p.temperature)
    row = row.float()
    if p.is_greedy:
        return row
    if p.top_k > 0:
        kth = torch.topk(row, min(p.top_k, row.shape[-1])).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    if p.top_p < 1.0:
        row = _top_p(row, p.top_p)
    if p.typical_p < 1.0:
        row = _typical_p(row, p.typical_p)
    return row


def _top_at_zero(row: torch.Tensor) -> torch.Tensor:
    """The same distribution with its largest logit at 0; NaN becomes -inf (never chosen)
    and +inf the largest finite value. A row with no finite logit stays NaN."""
    row = torch.nan_to_num(row, nan=-math.inf, posinf=torch.finfo(row.dtype).max, neginf=-math.inf)
    return row - row.max()


def _apply_penalties(row: torch.Tensor, history: torch.Tensor, num_prompt: int,
                     p: SamplingParams):
    if p.repetition_penalty != 1.0:
        seen = row[history]
        seen = torch.where(seen < 0, seen * p.repetition_penalty, seen / p.repetition_penalty)
        row = row.scatter(0, history, seen)
    generated = history[num_prompt:]
    if (p.frequency_penalty != 0.0 or p.presence_penalty != 0.0) and generated.numel():
        # OpenAI's definitions, over the generated tokens: minus frequency x times sampled
        # so far, minus presence once sampled at all. (TGI divides the counts by the
        # whole sequence length, prompt included, which makes the penalty nearly inert.)
        counts = torch.zeros_like(row).scatter_add_(0, generated, torch.ones_like(generated, dtype=row.dtype))
        row = row - p.frequency_penalty * counts - p.presence_penalty * (counts > 0).to(row.dtype)
    return row


def _apply_watermark(row: torch.Tensor, previous_token: int) -> torch.Tensor:
    rng = torch.Generator(device="cpu").manual_seed(WATERMARK_HASH_KEY * previous_token)
    greenlist = torch.randperm(row.shape[-1], generator=rng)[:int(WATERMARK_GAMMA * row.shape[-1])]
    return row.index_add(0, greenlist.to(row.device), torch.full(greenlist.shape, WATERMARK_DELTA,
                                                                    dtype=row.dtype, device=row.device))


def _top_p(row: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(row, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    remove = cumulative - sorted_logits.softmax(-1) >= top_p   # keep the token that crosses p
    return row.masked_fill(remove.scatter(0, order, remove), float("-inf"))


def _typical_p(row: torch.Tensor, typical_p: float) -> torch.Tensor:
    logp = torch.log_softmax(row, -1)
    probs = logp.exp()
    entropy = -(torch.nan_to_num(logp * probs)).sum()
    shifted = (-logp - entropy).abs()
    sorted_shift, order = torch.sort(shifted)
    cumulative = probs[order].cumsum(-1)
    last = int((cumulative < typical_p).sum().clamp(max=row.shape[-1] - 1))
    remove_sorted = sorted_shift > sorted_shift[last]
    return row.masked_fill(remove_sorted.scatter(0, order, remove_sorted), float("-inf"))


def _choose(logprobs: torch.Tensor, r: RowRequest) -> torch.Tensor:
    if r.params.is_greedy:
        return logprobs.argmax()
    probs = logprobs.exp().float().cpu()
    return torch.multinomial(probs, 1, generator=r.generator)[0].to(logprobs.device)


def _top_tokens(logprobs: torch.Tensor, rows: list[RowRequest]) -> list[list[tuple[int, float]]]:
    width = max((r.top_n_tokens for r in rows), default=0)
    if width == 0:
        return [[] for _ in rows]
    values, ids = torch.topk(logprobs, width, dim=-1)
    values, ids = values.tolist(), ids.tolist()
    out = []
    for i, r in enumerate(rows):
        pairs = zip(ids[i][:r.top_n_tokens], values[i][:r.top_n_tokens])
        out.append([(t, lp) for t, lp in pairs if lp != float("-inf")])
    return out
