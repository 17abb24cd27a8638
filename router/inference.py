"""Running validated requests on the shard pool: streaming one request with its timing
and latency metrics, collecting a whole generation, and TGI's best_of (n independent
shard calls, the best by mean token logprob)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from router.drain import Drain
from router.errors import IncompleteGeneration
from router.metrics import Metrics
from router.shards import Shard, ShardPool
from router.validation import ValidRequest
from router.wire import Finished, ShardRequest, Token, TokenDelta

T = TypeVar("T")


@dataclass(slots=True)
class Timing:
    """Request timestamps (time.perf_counter) in TGI's terms: validation ends when the
    request is handed to a shard; the shard reports how long it then waited in its queue."""

    start: float
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

    @property
    def mean_logprob(self) -> float:
        logprobs = [token.logprob for token in self.tokens if token.logprob is not None]
        return sum(logprobs) / len(logprobs) if logprobs else float("-inf")


class Inference:
    def __init__(self, pool: ShardPool, metrics: Metrics, drain: Drain) -> None:
        self._pool = pool
        self._metrics = metrics
        self._drain = drain

    async def stream(self, shard: Shard, valid: ValidRequest, request_id: str,
                     timing: Timing) -> AsyncIterator[TokenDelta]:
        """The shard's token stream, recording queue time, TTFT and inter-token latency.
        Each shard call gets an id of its own: the request id (which a client may choose,
        and reuse) only goes to the logs."""
        request = ShardRequest(call_id=uuid.uuid4().hex, log_id=request_id, input_ids=valid.input_ids,
                               parameters=valid.parameters, max_new_tokens=valid.max_new_tokens)
        last_token_at = None
        self._metrics.queue_size.inc()
        try:
            async with aclosing(self._pool.generate(shard, request)) as deltas:
                async for delta in deltas:
                    now = time.perf_counter()
                    if last_token_at is None:
                        self._metrics.queue_size.dec()
                        self._metrics.ttft.observe(now - timing.start)
                        timing.queue_s = max(timing.queue_s, delta.queue_time_s)
                    else:
                        self._metrics.inter_token.observe(now - last_token_at)
                    last_token_at = now
                    yield delta
        finally:
            if last_token_at is None:
                self._metrics.queue_size.dec()

    async def generate(self, valid: ValidRequest, request_id: str, timing: Timing,
                       num_sequences: int) -> list[Generation]:
        """Run `num_sequences` shard calls; the result is sorted best first."""
        generations = await self.generate_each([valid] * num_sequences, request_id, timing)
        return sorted(generations, key=lambda generation: generation.mean_logprob, reverse=True)

    async def generate_each(self, valids: list[ValidRequest], request_id: str,
                            timing: Timing) -> list[Generation]:
        """One shard call per request, all at once; the results in the same order. The end
        of a drain's grace period cuts them off (ShuttingDown)."""
        async with self._drain.cut_off():
            return await self._collect_each(valids, request_id, timing)

    async def _collect_each(self, valids: list[ValidRequest], request_id: str,
                            timing: Timing) -> list[Generation]:
        if len(valids) == 1:
            return [await self._collect(valids[0], request_id, timing)]
        tasks = [asyncio.ensure_future(self._collect(valid, request_id, timing)) for valid in valids]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            # One failure (or the client leaving) ends the siblings too, freeing their slots.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stream_each(self, shards: list[Shard], valids: list[ValidRequest], request_id: str,
                    timing: Timing) -> AsyncGenerator[tuple[int, TokenDelta], None]:
        """The token streams of several requests (one leased shard each), merged in arrival
        order as (request index, delta)."""
        if len(valids) == 1:
            return _indexed(self.stream(shards[0], valids[0], request_id, timing))
        return _merge([self.stream(shard, valid, request_id, timing) for shard, valid in zip(shards, valids)])

    async def _collect(self, valid: ValidRequest, request_id: str, timing: Timing) -> Generation:
        prefill: tuple[Token, ...] = ()
        tokens: list[Token] = []
        top_tokens: list[tuple[Token, ...]] = []
        with self._pool.lease(valid.num_kv_tokens) as shard:
            async with aclosing(self.stream(shard, valid, request_id, timing)) as deltas:
                async for delta in deltas:
                    prefill = prefill or delta.prefill_tokens
                    tokens.append(delta.token)
                    top_tokens.append(delta.top_tokens)
                    if delta.finished is not None:
                        return Generation(prefill=prefill, tokens=tuple(tokens), top_tokens=tuple(top_tokens),
                                          finished=delta.finished)
        raise IncompleteGeneration()


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
