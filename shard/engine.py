"""The engine thread: owns the scheduler, the model runner and the KV cache.

Each step reads as schedule -> execute -> update. The gRPC event loop talks to it only
through the inbox (add / abort) and the `publish` callback, which receives every event
of one step at once.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from tokenizers import Tokenizer

from shard.detokenizer import IncrementalDetokenizer, StopMatcher, token_text
from shard.metrics import ShardMetrics
from shard.model_runner import ChunkResult
from shard.scheduler import Scheduler, StepPlan
from shard.sequence import FinishReason, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    text: str
    logprob: float
    special: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    text: str
    generated_tokens: int
    finish_reason: FinishReason
    seed: int | None


@dataclass(frozen=True, slots=True)
class TokenEvent:
    request_id: str
    token: TokenInfo | None = None
    top_tokens: tuple[TokenInfo, ...] = ()
    prefill_tokens: tuple[TokenInfo, ...] = ()
    prefill_top_tokens: tuple[tuple[TokenInfo, ...], ...] = ()   # with prefill_tokens and top_n_tokens
    queue_time_s: float | None = None
    finished: Finished | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    message: str
    invalid_input: bool      # a malformed request, rather than one too big for this shard


@dataclass(frozen=True, slots=True)
class Load:
    """How busy the engine is: requests in the batch, and those queued for it."""
    num_running: int
    num_waiting: int


@dataclass(slots=True)
class _Tracked:
    """Engine-side state of one request beyond what the scheduler needs."""
    seq: Sequence
    detokenizer: IncrementalDetokenizer
    stops: StopMatcher
    prefill_logprobs: list[float] = field(default_factory=list)
    prefill_top_tokens: list[tuple[tuple[int, float], ...]] = field(default_factory=list)


Publish = Callable[[list[TokenEvent]], None]


class Engine:
    def __init__(self, scheduler: Scheduler, runner, tokenizer: Tokenizer,
                 special_ids: frozenset[int], publish: Publish, metrics: ShardMetrics,
                 vocab_size: int):
        self.scheduler = scheduler
        self.vocab_size = vocab_size
        self.runner = runner
        self.tokenizer = tokenizer
        self.special_ids = special_ids
        self.publish = publish
        self.metrics = metrics
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._tracked: dict[str, _Tracked] = {}
        self._stopping = threading.Event()
        self._crashed = False
        self._thread: threading.Thread | None = None

    # -- called from other threads -------------------------------------------------------
    def start(self) -> None:
        """Run the loop on a thread of its own. The shard process instead calls run() on
        its main thread, where OpenMP keeps its workers spinning between kernels."""
        self._thread = threading.Thread(target=self.run, name="engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Safe from a signal handler on the thread that runs the loop."""
        self._stopping.set()
        self._inbox.put(("wake", None))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def submit(self, seq: Sequence) -> Refusal | None:
        """Queue a request; returns why it can never run instead, if so."""
        out_of_range = [t for t in seq.prompt_ids if not 0 <= t < self.vocab_size]
        if out_of_range:
            return Refusal(f"token id {out_of_range[0]} is outside the vocabulary "
                           f"(size {self.vocab_size})", invalid_input=True)
        reason = self.scheduler.check_fits(seq)
        if reason is not None:
            return Refusal(reason, invalid_input=False)
        self._inbox.put(("add", seq))
        return None

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))

    def load(self) -> Load:
        """Safe from any thread: it only reads the lengths of the scheduler's queues, each
        read whole. A request moving between them may be counted in both or neither."""
        return Load(len(self.scheduler.running), len(self.scheduler.waiting))

    # -- the engine thread ---------------------------------------------------------------
    def run(self) -> None:
        """The loop; returns after stop()."""
        try:
            self._loop()
        except BaseException:
            self._crashed = True
            raise
        finally:
            self.runner.close()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._drain_inbox(block=not self.scheduler.has_work)
            if self._stopping.is_set():
                break
            plan = self.scheduler.schedule()
            if not plan.chunks:
                continue
            started = time.perf_counter()
            try:
                results = self.runner.execute(plan)
            except Exception:
                log.exception("step failed; retrying its requests one by one")
                plan, results = self._execute_isolated(plan)
            plan, results = self._fail_unsampled(plan, results)
            self.publish(self._update(plan, results))
            self.metrics.observe_step(plan, time.perf_counter() - started, self.scheduler)

    def _drain_inbox(self, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            kind, value = item
            if kind == "add":
                self._tracked[value.request_id] = _Tracked(
                    value, IncrementalDetokenizer(self.tokenizer, self.special_ids),
                    StopMatcher(value.stopping.stop_sequences))
                self.scheduler.add(value)
            elif kind == "abort" and value in self._tracked:
                self.scheduler.abort(value)
                self._forget(value)
                self.metrics.cancelled.inc()
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                # Aborts can empty the batch with no step after them: refresh the gauges now.
                self.metrics.observe_state(self.scheduler)
                return

    def _update(self, plan: StepPlan, results: list[ChunkResult]) -> list[TokenEvent]:
        self.scheduler.update(plan, [r.token_id for r in results])
        events = []
        for chunk, result in zip(plan.chunks, results):
            tracked = self._tracked.get(chunk.seq.request_id)
            if tracked is None:
                continue
            tracked.prefill_logprobs.extend(result.prefill_logprobs)
            tracked.prefill_top_tokens.extend(result.prefill_top_tokens)
            if result.token_id is None:
                continue
            error = self._advance_grammar(chunk.seq, result.token_id)
            events.append(self._fail(chunk.seq, error) if error else
                          self._token_event(tracked, result))
        return events

    def _advance_grammar(self, seq: Sequence, token_id: int) -> str | None:
        """A constrained request finishes (eos_token) once its grammar is complete; length
        and EOS, decided by the scheduler just before, come first."""
        if seq.constraint is None or seq.status.is_finished:
            return None
        error = seq.constraint.advance(token_id)
        if error is None and seq.constraint.is_complete:
            self.scheduler.finish(seq, FinishReason.EOS_TOKEN)
        return error

    def _token_event(self, tracked: _Tracked, result: ChunkResult) -> TokenEvent:
        seq = tracked.seq
        text, special = tracked.detokenizer.step(result.token_id)
        # Fed every token, so a stop string begun before min_new_tokens still counts when it
        # ends after; ending earlier it does not (vLLM's min_tokens: no stop check before).
        stopped = not special and tracked.stops.feed(text)
        if stopped and not seq.status.is_finished and len(seq.output_ids) >= seq.stopping.min_new_tokens:
            self.scheduler.finish(seq, FinishReason.STOP_SEQUENCE)
        first = len(seq.output_ids) == 1
        with_prefill = first and seq.prefill_logprobs
        event = TokenEvent(
            seq.request_id,
            TokenInfo(result.token_id, text, result.logprob, special),
            tuple(self._info(t, lp) for t, lp in result.top_tokens),
            self._prefill_tokens(tracked) if with_prefill else (),
            self._prefill_top_tokens(tracked) if with_prefill and seq.top_n_tokens else (),
            (seq.first_scheduled_s or seq.arrival_s) - seq.arrival_s if first else None,
            self._finished(tracked) if seq.status.is_finished else None)
        if seq.status.is_finished:
            self._forget(seq.request_id)
        return event

    def _finished(self, tracked: _Tracked) -> Finished:
        seq = tracked.seq
        seed = None if seq.sampling.is_greedy else seq.sampling.seed
        self.metrics.generated_tokens.inc(len(seq.output_ids))
        return Finished(tracked.detokenizer.text, len(seq.output_ids), seq.finish_reason, seed)

    def _prefill_tokens(self, tracked: _Tracked) -> tuple[TokenInfo, ...]:
        logprobs = [math.nan] + tracked.prefill_logprobs
        return tuple(self._info(t, lp) for t, lp in zip(tracked.seq.prompt_ids, logprobs))

    def _prefill_top_tokens(self, tracked: _Tracked) -> tuple[tuple[TokenInfo, ...], ...]:
        tops = [(), *tracked.prefill_top_tokens]     # nothing precedes the first token
        return tuple(tuple(self._info(t, lp) for t, lp in top) for top in tops)

    def _info(self, token_id: int, logprob: float) -> TokenInfo:
        return TokenInfo(token_id, token_text(self.tokenizer, token_id), logprob,
                         token_id in self.special_ids)

    def _forget(self, request_id: str) -> None:
        tracked = self._tracked.pop(request_id, None)
        if tracked is not None:
            tracked.seq.constraint = None
        self.runner.forget(request_id)

    def _fail(self, seq: Sequence, error: str) -> TokenEvent:
        """This request alone ends with an error; the others go on."""
        log.error("request %s failed: %s", seq.request_id, error)
        self.scheduler.finish(seq, None)
        self._forget(seq.request_id)
        return TokenEvent(seq.request_id, error=error)

    def _fail_unsampled(self, plan: StepPlan, results: list[ChunkResult]
                        ) -> tuple[StepPlan, list[ChunkResult]]:
        """Requests whose own sampling values left them no token fail alone. The step stands
        for the others: the forward pass is shared, but sampling is per row."""
        if all(result.error is None for result in results):
            return plan, results
        kept, events = [], []
        for chunk, result in zip(plan.chunks, results):
            if result.error is None:
                kept.append((chunk, result))
                continue
            events.append(self._fail(chunk.seq, result.error))
        self.publish(events)
        return dataclasses.replace(plan, chunks=tuple(c for c, _ in kept)), [r for _, r in kept]

    def _execute_isolated(self, plan: StepPlan) -> tuple[StepPlan, list[ChunkResult]]:
        """Re-run a failed step one request at a time, so a request that breaks the model
        fails alone and the others go on. Re-running rewrites the same KV positions."""
        kept, results, events = [], [], []
        for chunk in plan.chunks:
            try:
                results.extend(self.runner.execute(StepPlan((chunk,))))
                kept.append(chunk)
            except Exception as exc:
                log.exception("request %s failed", chunk.seq.request_id)
                self.scheduler.finish(chunk.seq, None)
                self._forget(chunk.seq.request_id)
                events.append(TokenEvent(chunk.seq.request_id, error=f"generation failed: {exc}"))
        self.publish(events)
        return StepPlan(tuple(kept)), results

    @property
    def is_alive(self) -> bool:
        return not self._crashed and not self._stopping.is_set()
