"""Continuous batching policy: which tokens run in the next step. Plain Python, no torch.

Every step is a list of chunks. A decoding sequence contributes a one-token chunk; a
sequence still reading its prompt contributes up to the prefill budget, so a long prompt
is spread over several steps while the others keep decoding. The plan lists its chunks in
the order the model reads them: decode chunks first, by slot, then prompt chunks.

KV memory is reserved per request (prompt + max_new_tokens) when it is admitted, so a
running request never runs out of cache and nothing is ever preempted.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from shard.prefix_cache import PrefixCopy, PrefixIndex
from shard.sequence import FinishReason, Sequence, SequenceStatus
from shard.slots import SlotAllocator


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    max_batch_size: int
    max_batch_prefill_tokens: int
    max_batch_total_tokens: int
    max_total_tokens: int            # one slot's capacity
    waiting_served_ratio: float = 0.0
    max_waiting_tokens: int = 20
    priority_aging_s: float = 2.0    # a waiting request rises one class per this much waiting


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: Sequence
    start: int                       # first position fed this step
    end: int                         # one past the last

    @property
    def num_tokens(self) -> int:
        return self.end - self.start

    @property
    def samples(self) -> bool:
        """True when this chunk reaches the end of the known tokens, so it yields a token."""
        return self.end == self.seq.num_tokens

    @property
    def is_decode(self) -> bool:
        """One token, which attends through the decode path (one query per slot): every
        decoding sequence's chunk, and a prompt's last token when it is fed alone."""
        return self.num_tokens == 1


@dataclass(frozen=True, slots=True)
class StepPlan:
    """`chunks`: decode chunks first, by slot (the order decode attention reads the
    cache in), then prompt chunks; results follow the same order."""
    chunks: tuple[Chunk, ...]
    copies: tuple[PrefixCopy, ...] = ()   # cache prefixes to copy before the forward
    num_cached_tokens: int = 0            # prompt tokens reused (copied or in place)

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)

    @property
    def num_decode(self) -> int:
        """chunks[:num_decode] are the decode chunks."""
        return sum(c.is_decode for c in self.chunks)

    @property
    def has_prefill(self) -> bool:
        return self.num_decode < len(self.chunks)


class Scheduler:
    def __init__(self, limits: SchedulerLimits, num_slots: int, eos_token_ids: frozenset[int],
                 prefixes: PrefixIndex | None = None):
        self.limits = limits
        self.prefixes = prefixes
        self.eos_token_ids = eos_token_ids
        self.slots = SlotAllocator(num_slots)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_reserved_tokens = 0
        self.steps_since_join = 0

    # -- admission ---------------------------------------------------------------------
    def check_fits(self, seq: Sequence) -> str | None:
        """Why this request can never run here, or None if it can (now or later)."""
        need, lim = seq.max_tokens, self.limits
        if need > lim.max_total_tokens:
            return (f"prompt ({seq.num_prompt} tokens) + max_new_tokens "
                    f"({seq.stopping.max_new_tokens}) exceeds the shard's context of "
                    f"{lim.max_total_tokens} tokens")
        if need > lim.max_batch_total_tokens:
            return (f"request needs {need} KV tokens but --max-batch-total-tokens is "
                    f"{lim.max_batch_total_tokens}")
        return None

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def abort(self, request_id: str) -> Sequence | None:
        for seq in self.running:
            if seq.request_id == request_id:
                self.finish(seq, None)
                return seq
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                seq.status = SequenceStatus.ABORTED
                return seq
        return None

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # -- schedule ----------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        budget = self.limits.max_batch_prefill_tokens
        chunks: list[Chunk] = []
        for seq in self.running:
            if seq.status is SequenceStatus.DECODING:
                chunks.append(Chunk(seq, seq.num_computed, seq.num_computed + 1))
        budget -= len(chunks)
        for seq in self.running:
            if seq.status is SequenceStatus.PREFILLING and budget > 0:
                chunks.append(self._prefill_chunk(seq, budget))
                budget -= chunks[-1].num_tokens
        copies: list[PrefixCopy] = []
        admitted = []
        if self._join_allowed():
            self._order_waiting()
            while budget > 0 and self._can_admit_next() and not self._awaits_sibling():
                admitted.append(self._admit(self.waiting.popleft(), copies))
                chunks.append(self._prefill_chunk(admitted[-1], budget))
                budget -= chunks[-1].num_tokens
        return StepPlan(_decode_first(chunks), tuple(copies), sum(s.num_cached for s in admitted))

    def _order_waiting(self) -> None:
        """Class order (0 high, 1 normal, 2 low), first come first served within a class. A
        request rises one class per priority_aging_s waited, so a low one waits at most
        two of those behind newer high ones: no class starves."""
        if len({seq.priority for seq in self.waiting}) < 2:
            return   # one class: arrival order already
        now, aging_s = time.monotonic(), self.limits.priority_aging_s

        def rank(seq: Sequence) -> tuple[int, float]:
            risen = int((now - seq.arrival_s) / aging_s) if aging_s > 0 else 0
            return max(0, seq.priority - risen), seq.arrival_s

        self.waiting = deque(sorted(self.waiting, key=rank))

    def _prefill_chunk(self, seq: Sequence, budget: int) -> Chunk:
        # Feed the prompt; a request whose prompt is done but whose last token has no
        # KV yet (never the case for prompts) would be a one-token decode chunk.
        end = min(seq.num_tokens, seq.num_computed + budget)
        return Chunk(seq, seq.num_computed, end)

    def _join_allowed(self) -> bool:
        """TGI's back-pressure: wait for enough new requests, but never for too long."""
        if not self.waiting:
            return False
        if not self.running or self.steps_since_join >= self.limits.max_waiting_tokens:
            return True
        return len(self.waiting) >= int(len(self.running) * self.limits.waiting_served_ratio)

    def _awaits_sibling(self) -> bool:
        """The next request shares its prompt with one still prefilling: it joins a step
        later and copies that prefix (FIFO: those behind it wait too, for one chunk)."""
        return self.prefixes is not None and self.prefixes.awaits_sibling(self.waiting[0], self.running)

    def _can_admit_next(self) -> bool:
        if not self.waiting or len(self.running) >= self.limits.max_batch_size:
            return False
        if not self.slots.num_free:
            return False
        need = self.waiting[0].max_tokens
        return self.num_reserved_tokens + need <= self.limits.max_batch_total_tokens

    def _admit(self, seq: Sequence, copies: list[PrefixCopy]) -> Sequence:
        seq.slot = self.slots.allocate()
        copy = self.prefixes.claim(seq, self.running) if self.prefixes else None
        if copy is not None:
            seq.num_computed = seq.num_cached = copy.num_tokens
            if copy.source_slot != copy.target_slot:
                copies.append(copy)
        seq.first_scheduled_s = time.monotonic()
        seq.status = SequenceStatus.PREFILLING
        self.num_reserved_tokens += seq.max_tokens
        self.running.append(seq)
        self.steps_since_join = 0
        return seq

    # -- update ------------------------------------------------------------------------
    def update(self, plan: StepPlan, sampled_ids: list[int | None]) -> None:
        """Record one step: KV now covers each chunk; sampling chunks append their token.

        Finishes on length before EOS, as TGI does (an EOS at the last position is
        reported as `length`). Stop strings are the engine's job: they need text.
        """
        self.steps_since_join += 1
        for chunk, token_id in zip(plan.chunks, sampled_ids):
            seq = chunk.seq
            seq.num_computed = chunk.end
            if token_id is None:
                continue
            seq.output_ids.append(token_id)
            seq.status = SequenceStatus.DECODING
            if len(seq.output_ids) >= seq.stopping.max_new_tokens:
                self.finish(seq, FinishReason.LENGTH)
            elif token_id in self.eos_token_ids and not seq.stopping.ignore_eos_token:
                self.finish(seq, FinishReason.EOS_TOKEN)

    def finish(self, seq: Sequence, reason: FinishReason | None) -> None:
        """Leave the batch now and give the slot and the reservation back."""
        if seq.status.is_finished:
            return
        seq.status = SequenceStatus.FINISHED if reason is not None else SequenceStatus.ABORTED
        seq.finish_reason = reason
        self.running.remove(seq)
        self.slots.free(seq.slot)
        if self.prefixes:
            self.prefixes.retire(seq)
        self.num_reserved_tokens -= seq.max_tokens


def _decode_first(chunks: list[Chunk]) -> tuple[Chunk, ...]:
    decode = sorted((c for c in chunks if c.is_decode), key=lambda c: c.seq.slot)
    return tuple(decode + [c for c in chunks if not c.is_decode])
