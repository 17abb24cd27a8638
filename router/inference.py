"""Running validated requests on the shard pool: leasing shards, streaming each request
with its timing and latency metrics, collecting whole generations, and TGI's best_of
(n independent shard calls, the best by mean token logprob)."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import ExitStack, aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry.trace import NoOpTracer, Status, StatusCode, Tracer

from router.deadlines import NO_DEADLINES, Deadlines, enforced
from router.drain import Drain
from router.errors import IncompleteGeneration, Overloaded
from router.metrics import Metrics
from router.shards import PooledShard, ShardPool
from router.tracing import shard_call_span
from router.validation import ValidRequest
from router.wire import Finished, ShardRequest, Token, TokenDelta

T = TypeVar("T")


@dataclass(slots=True)
class Timing:
    """Request timestamps (time.perf_counter) in TGI's terms: validation ends when the
    request is handed to a shard; the shard reports how long it then waited in its queue."""

    start: float
    deadlines: Deadlines = NO_DEADLINES
    priority: str = "normal"   # its class: router/priorities.py
    validated: float = 0.0
    queue_s: float = 0.0
    end: float = 0.0

    def mark_validated(self) -> float:
        self.validated = time.perf_counter()
        return self.validated - self.start

    def mark_end(self) -> None:
        self.end = time.perf_counter()

    @property
    def total_s(self) -> float:
        return self.end - self.start

    @property
    def validation_s(self) -> float:
        return self.validated - self.start

    @property
    def inference_s(self) -> float:
        return max(self.end - self.validated - self.queue_s, 0.0)


@dataclass(frozen=True, slots=True)
class Generation:
    """One finished shard call."""

    prefill: tuple[Token, ...]
    tokens: tuple[Token, ...]
    top_tokens: tuple[tuple[Token, ...], ...]
    finished: Finished
    prefill_top_tokens: tuple[tuple[Token, ...], ...] = ()

    @property
    def mean_logprob(self) -> float:
        logprobs = [token.logprob for token in self.tokens if token.logprob is not None]
        return sum(logprobs) / len(logprobs) if logprobs else float("-inf")


class Inference:
    """Runs validated requests on the shard pool: the one owner of leasing a shard, the
    drain's cut-off and cancelling shard calls, for streamed and whole answers alike."""

    def __init__(self, pool: ShardPool, metrics: Metrics, drain: Drain, tracer: Tracer | None = None) -> None:
        self._pool = pool
        self._metrics = metrics
        self._drain = drain
        self._tracer = tracer or NoOpTracer()

    @contextmanager
    def lease(self, valids: list[ValidRequest], request_id: str, timing: Timing) -> Iterator[ShardRun]:
        """A shard for each request, reserved now, so that "no shard in rotation" (424) and
        "no room on any" (429) are answered before a stream sends its headers. A prompt's
        choices (n, best_of: neighbours with the same tokens) go to one shard where one
        holds them all, so it prefills the prompt once and the others copy its KV
        (shard/prefix_cache.py); where none does, each goes where it fits, as before."""
        with ExitStack() as leases:
            shards = [shard for _, group in itertools.groupby(valids, key=lambda valid: valid.input_ids)
                      for shard in self._lease_choices(leases, list(group))]
            yield ShardRun(self, self._drain, shards, valids, request_id, timing)

    def _lease_choices(self, leases: ExitStack, choices: list[ValidRequest]) -> list[PooledShard]:
        """One shard for all of a prompt's choices, or else one lease each."""
        if len(choices) > 1:
            num_tokens = sum(choice.num_kv_tokens for choice in choices)
            try:
                return [leases.enter_context(self._pool.lease(num_tokens, len(choices)))] * len(choices)
            except Overloaded:
                pass  # no one shard has room for them all: they may still fit apart
        return [leases.enter_context(self._pool.lease(choice.num_kv_tokens)) for choice in choices]

    async def generate(self, valid: ValidRequest, request_id: str, timing: Timing,
                       num_sequences: int) -> list[Generation]:
        """Run `num_sequences` shard calls; the result is sorted best first."""
        generations = await self.generate_each([valid] * num_sequences, request_id, timing)
        return sorted(generations, key=lambda generation: generation.mean_logprob, reverse=True)

    async def generate_each(self, valids: list[ValidRequest], request_id: str,
                            timing: Timing) -> list[Generation]:
        """One shard call per request, all at once; the results in the same order."""
        with self.lease(valids, request_id, timing) as run:
            return await run.collect()

    async def stream(self, shard: PooledShard, valid: ValidRequest, request_id: str,
                     timing: Timing) -> AsyncIterator[TokenDelta]:
        """The shard's token stream, recording queue time, TTFT and inter-token latency.
        Each shard call gets an id of its own: the request id (which a client may choose,
        and reuse) only goes to the logs."""
        call_id = uuid.uuid4().hex
        span, trace_headers = shard_call_span(self._tracer)
        span.set_attribute("sluice.shard_call_id", call_id)
        request = ShardRequest(call_id=call_id, log_id=request_id, input_ids=valid.input_ids,
                               parameters=valid.parameters, max_new_tokens=valid.max_new_tokens,
                               priority=timing.priority, trace_headers=trace_headers)
        last_token_at = None
        self._metrics.queue_size.inc()
        try:
            async with aclosing(self._pool.generate(shard, request)) as deltas:
                async for delta in deltas:
                    now = time.perf_counter()
                    if last_token_at is None:
                        span.add_event("first token")
                        self._metrics.queue_size.dec()
                        self._metrics.ttft.observe(now - timing.start)
                        timing.queue_s = max(timing.queue_s, delta.queue_time_s)
                    else:
                        self._metrics.inter_token.observe(now - last_token_at)
                    last_token_at = now
                    if delta.finished is not None:
                        span.set_attribute("sluice.generated_tokens", delta.finished.generated_tokens)
                        span.set_attribute("sluice.finish_reason", delta.finished.finish_reason)
                    yield delta
        except Exception as exc:   # not a consumer closing early (GeneratorExit, cancellation)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()
            if last_token_at is None:
                self._metrics.queue_size.dec()


class ShardRun:
    """Leased shards, one per request, and their token streams."""

    def __init__(self, inference: Inference, drain: Drain, shards: list[PooledShard], valids: list[ValidRequest],
                 request_id: str, timing: Timing) -> None:
        self._inference = inference
        self._drain = drain
        self._shards = shards
        self.valids = valids
        self._request_id = request_id
        self._timing = timing

    @asynccontextmanager
    async def tokens(self) -> AsyncIterator[AsyncGenerator[tuple[int, TokenDelta], None]]:
        """(request index, delta) as they come. Leaving the block, or the end of a drain's
        grace period (ShuttingDown in the block), closes the streams, which cancels
        their shard calls, so the shards free the slots."""
        async with self._drain.cut_off():
            tokens = self._merged()
            if self._timing.deadlines != NO_DEADLINES:   # no timer per token without one
                tokens = enforced(tokens, self._timing.deadlines, self._timing.start)
            async with aclosing(tokens) as tokens:
                yield tokens

    async def collect(self) -> list[Generation]:
        """Each request's whole generation, in order; one failure ends them all."""
        collectors = [_Collector() for _ in self.valids]
        async with self.tokens() as tokens:
            async for index, delta in tokens:
                collectors[index].add(delta)
                if all(collector.finished is not None for collector in collectors):
                    return [collector.generation() for collector in collectors]
        raise IncompleteGeneration()

    def _merged(self) -> AsyncGenerator[tuple[int, TokenDelta], None]:
        streams = [self._inference.stream(shard, valid, self._request_id, self._timing)
                   for shard, valid in zip(self._shards, self.valids)]
        return _indexed(streams[0]) if len(streams) == 1 else _merge(streams)


class _Collector:
    def __init__(self) -> None:
        self.prefill: tuple[Token, ...] = ()
        self.prefill_top_tokens: tuple[tuple[Token, ...], ...] = ()
        self.tokens: list[Token] = []
        self.top_tokens: list[tuple[Token, ...]] = []
        self.finished: Finished | None = None

    def add(self, delta: TokenDelta) -> None:
        self.prefill = self.prefill or delta.prefill_tokens
        self.prefill_top_tokens = self.prefill_top_tokens or delta.prefill_top_tokens
        self.tokens.append(delta.token)
        self.top_tokens.append(delta.top_tokens)
        self.finished = delta.finished or self.finished

    def generation(self) -> Generation:
        return Generation(prefill=self.prefill, tokens=tuple(self.tokens), top_tokens=tuple(self.top_tokens),
                          finished=self.finished, prefill_top_tokens=self.prefill_top_tokens)


async def _indexed(source: AsyncGenerator[T, None]) -> AsyncGenerator[tuple[int, T], None]:
    async with aclosing(source) as items:
        async for item in items:
            yield 0, item


async def _merge(sources: list[AsyncGenerator[T, None]]) -> AsyncGenerator[tuple[int, T], None]:
    """Items from all sources as they come. One source failing, or the consumer closing
    this generator, cancels and closes every source (so their shard calls end too)."""
    pending = {asyncio.ensure_future(anext(source)): index for index, source in enumerate(sources)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in sorted(done, key=pending.__getitem__):
                index = pending.pop(future)
                try:
                    item = future.result()
                except StopAsyncIteration:
                    continue
                pending[asyncio.ensure_future(anext(sources[index]))] = index
                yield index, item
    finally:
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for source in sources:
            await source.aclose()
