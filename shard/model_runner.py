"""The only module that calls the model: turns a StepPlan into tensors, runs one forward,
and picks the next tokens (within each constrained request's grammar)."""
from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from shard.kv_cache import KVCache
from shard.models.llama import LlamaModel, PrefillSpan, StepInputs
from shard.sampling import RowRequest, TokenMask, sample
from shard.scheduler import Chunk, StepPlan
from shard.threads import ThreadGovernor
from shard.token_masks import allowed_tokens


@dataclass(frozen=True, slots=True)
class ChunkResult:
    token_id: int | None                 # None while a prompt is still being read
    logprob: float = math.nan
    top_tokens: tuple[tuple[int, float], ...] = ()
    prefill_logprobs: tuple[float, ...] = ()   # for prompt positions start+1 .. end-1(+1)
    prefill_top_tokens: tuple[tuple[tuple[int, float], ...], ...] = ()   # the same positions' top_n
    error: str | None = None             # this request alone could not sample: it fails


class ModelRunner:
    def __init__(self, model: LlamaModel, cache: KVCache, device: torch.device,
                 eos_token_ids: frozenset[int] = frozenset(), threads: ThreadGovernor | None = None):
        self.model = model
        self._eos_token_ids = tuple(sorted(eos_token_ids))   # masked until min_new_tokens
        self.cache = cache
        self.device = device
        self._generators: dict[str, torch.Generator] = {}
        self.greedy = model.backend.greedy
        self.threads = threads
        # A step's masks depend only on tokens already taken: this thread fills them while
        # the forward runs (llguidance releases the GIL), so they add nothing to the step.
        self._mask_thread = ThreadPoolExecutor(1, thread_name_prefix="token-mask")

    def close(self) -> None:
        if self.threads is not None:
            self.threads.stop()
        self._mask_thread.shutdown(wait=False)

    def forget(self, request_id: str) -> None:
        self._generators.pop(request_id, None)

    def execute(self, plan: StepPlan) -> list[ChunkResult]:
        """Results in the order of plan.chunks, which is already the model's order."""
        if self.threads is not None:
            self.threads.apply()   # between steps, on the thread that runs them
        for copy in plan.copies:
            self.cache.copy_prefix(copy.source_slot, copy.target_slot, copy.num_tokens)
        step, sample_rows, prompt_rows = self._build_inputs(plan)
        sampling = [c for c, r in zip(plan.chunks, sample_rows) if r is not None]
        pending = self._start_masks(sampling)
        try:
            logits = self.model.logits(self.model.forward(step, self.cache))
        finally:
            # Joined even when the forward fails: nothing may advance a grammar while its
            # mask is being written.
            masks = pending.result() if pending else (None, [None] * len(sampling))
        return self._pick(plan.chunks, logits, sample_rows, prompt_rows, masks)

    def _start_masks(self, chunks: list[Chunk]) -> Future | None:
        """The constrained rows' masks, being filled; None when no row is constrained."""
        if all(c.seq.constraint is None for c in chunks):
            return None
        return self._mask_thread.submit(self._token_mask, chunks, self.model.vocab_size)

    # -- inputs ------------------------------------------------------------------------
    def _build_inputs(self, plan: StepPlan):
        input_ids, positions, slot_ids, logits_rows = [], [], [], []
        sample_rows: list[int | None] = []        # per chunk: index into logits, or None
        prompt_rows: list[tuple[int, int]] = []   # per chunk: (first, count) logits rows
        spans = []
        for chunk in plan.chunks:
            offset = len(input_ids)
            seq = chunk.seq
            input_ids.extend(seq.token_at(p) for p in range(chunk.start, chunk.end))
            positions.extend(range(chunk.start, chunk.end))
            slot_ids.extend([seq.slot] * chunk.num_tokens)
            if not chunk.is_decode:
                spans.append(PrefillSpan(offset, chunk.num_tokens, seq.slot, chunk.start))
            first = len(logits_rows)
            if seq.prefill_logprobs and chunk.start < seq.num_prompt:
                logits_rows.extend(range(offset, offset + chunk.num_tokens))
            elif chunk.samples:
                logits_rows.append(offset + chunk.num_tokens - 1)
            prompt_rows.append((first, len(logits_rows) - first))
            sample_rows.append(len(logits_rows) - 1 if chunk.samples else None)
        tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=self.device)
        positions = tensor(positions)
        slot_ids = tensor(slot_ids)
        decode = plan.chunks[:plan.num_decode]
        step = StepInputs(tensor(input_ids), positions, slot_ids,
                          self.cache.rows(slot_ids, positions), len(decode),
                          tuple(c.seq.slot for c in decode), tuple(c.start for c in decode),
                          tuple(spans), tensor(logits_rows))
        return step, sample_rows, prompt_rows

    # -- outputs -----------------------------------------------------------------------
    def _pick(self, chunks, logits, sample_rows, prompt_rows, masks) -> list[ChunkResult]:
        sampling = [(c, r) for c, r in zip(chunks, sample_rows) if r is not None]
        picked = iter(self._sample([c for c, _ in sampling], logits, [r for _, r in sampling], masks)
                      if sampling else ())
        results = []
        for chunk, row, (first, count) in zip(chunks, sample_rows, prompt_rows):
            prefill, prefill_top = self._prompt_logprobs(chunk, logits[first:first + count]) if (
                chunk.seq.prefill_logprobs and count) else ((), ())
            if row is None:
                results.append(ChunkResult(None, prefill_logprobs=prefill, prefill_top_tokens=prefill_top))
                continue
            token_id, logprob, top, error = next(picked)
            results.append(ChunkResult(token_id, logprob, tuple(top), prefill, prefill_top, error))
        return results

    def _sample(self, chunks: list[Chunk], logits: torch.Tensor, selected: list[int],
                masks: tuple[TokenMask | None, list[str | None]]):
        """Per sampling chunk: (token id, logprob, top tokens, error); `masks` as _token_mask's."""
        rows = [self._row_request(c) for c in chunks]
        # Most steps sample every row: no copy of the [rows, vocab] matrix then. (A mask
        # writes into these rows; no prompt logprob is read from a row that samples.)
        chosen = logits if selected == list(range(logits.shape[0])) else logits[selected]
        mask, grammar_errors = masks
        sampled = sample(chosen, rows, self.greedy, mask)
        errors = [g or e for g, e in zip(grammar_errors, sampled.errors or [None] * len(rows))]
        return zip(sampled.token_ids, sampled.logprobs, sampled.top_tokens, errors)

    def _token_mask(self, chunks: list[Chunk], width: int
                    ) -> tuple[TokenMask | None, list[str | None]]:
        """The grammars' mask over these rows (None when no row is constrained: no cost),
        and per row the error of a grammar that broke computing it."""
        errors: list[str | None] = [None] * len(chunks)
        rows = [i for i, c in enumerate(chunks) if c.seq.constraint is not None]
        if not rows:
            return None, errors
        allowed, row_errors = allowed_tokens([chunks[i].seq.constraint for i in rows], width)
        for i, error in zip(rows, row_errors):
            errors[i] = error
        return TokenMask(rows, allowed), errors

    def _prompt_logprobs(self, chunk: Chunk, logits: torch.Tensor):
        """Logprob of each prompt token after position `start`, given what precedes it, and
        with top_n_tokens the most likely tokens there ((id, logprob) pairs)."""
        seq = chunk.seq
        last = min(chunk.end, seq.num_prompt - 1)       # predict tokens start+1 .. last
        if last <= chunk.start:
            return (), ()
        targets = torch.tensor(seq.prompt_ids[chunk.start + 1:last + 1], device=logits.device)
        logprobs = torch.log_softmax(logits[:targets.numel()].float(), dim=-1)
        chosen = tuple(logprobs.gather(1, targets[:, None])[:, 0].tolist())
        if not seq.top_n_tokens:
            return chosen, ()
        values, ids = torch.topk(logprobs, seq.top_n_tokens, dim=-1)
        return chosen, tuple(tuple(zip(row_ids, row_values)) for row_ids, row_values in zip(ids.tolist(),
                                                                                        values.tolist()))

    def _row_request(self, chunk: Chunk) -> RowRequest:
        seq = chunk.seq
        params = seq.sampling
        generator = None
        if not params.is_greedy:
            generator = self._generators.get(seq.request_id)
            if generator is None:
                generator = torch.Generator(device="cpu").manual_seed(params.seed or 0)
                self._generators[seq.request_id] = generator
        history = None
        if params.needs_penalties or params.watermark:
            history = seq.prompt_ids + seq.output_ids
        bias = params.logit_bias
        if len(seq.output_ids) < seq.stopping.min_new_tokens:
            bias += tuple((token_id, -math.inf) for token_id in self._eos_token_ids)
        return RowRequest(params, history, generator, seq.top_n_tokens, seq.num_prompt, bias)
