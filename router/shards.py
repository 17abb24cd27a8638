"""ShardPool: one grpc.aio channel per shard, least-outstanding choice among the healthy
ones, a background Health poll that takes failed shards out of rotation until they
answer again, and a watch that fails the streams of a shard gone silent."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from router.errors import GenerationError, Overloaded
from router.metrics import ShardState
from router.wire import ShardClient, ShardInfo, ShardLoad, ShardRequest, TokenDelta

log = logging.getLogger(__name__)

# Codes that say "this shard is gone", not "this request was bad".
_SHARD_DOWN_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})

# Busy is not dead (issue 12.8). A shard that stops answering (a frozen process; a downed
# link or powered-off host, which send no FIN or RST) must fail its streams within the 2 s
# the router promises; one whose host is only saturated must not, though its threads, or
# ours, may then wait a second or more for a CPU. One HTTP/2 ping cannot tell them apart:
# gRPC's client pings at most once a second, so a 2 s bound left one ping 1 s. Instead,
# anything heard from a shard with requests open (a token on any stream, a Health answer)
# is life; silent for PROBE_AFTER_S, it is asked Health every PROBE_AFTER_S; silent for
# DEAD_AFTER_S, its streams fail. A watch tick that comes late means this process was
# starved too, with answers perhaps still unread: that tick gives no verdict.
LIVENESS_TICK_S = 0.1
PROBE_AFTER_S = 0.25
DEAD_AFTER_S = 1.6
LATE_TICK_S = 0.2

# HTTP/2 keepalive stays as the backstop for a connection with nothing open on it, given
# long enough that it is never what fails a slow shard's streams. Shards accept pings this
# often (shard/health.py); gRPC would otherwise stop after two pings without data.
# Reconnects back off to 2 s at most, not gRPC's 120 s, so a host whose link or process
# comes back is in rotation again within a few health checks.
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 5000),
    # What grpcio (1.85) actually waits for a ping's answer: keepalive_timeout_ms alone
    # never fails a frozen peer's connection.
    ("grpc.http2.ping_timeout_ms", 5000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # The Tokenizer answer carries tokenizer.json, which is tens of MB for some models;
    # gRPC's default refuses messages over 4 MB.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


@dataclass(slots=True)
class PooledShard:
    """One shard as the pool sees it: its channel, its health, and what this router has
    open on it (the shard's process is the launcher's ShardProcess, or another host's)."""

    uri: str
    channel: grpc.aio.Channel
    client: ShardClient
    healthy: bool = True
    num_outstanding: int = 0
    load: ShardLoad | None = None
    max_batch_total_tokens: int = 0  # its KV budget, from Info
    num_reserved_tokens: int = 0  # prompt + max_new_tokens of the calls this router has open on it
    heard_at: float = 0.0  # time.monotonic() of its last token or Health answer
    probed_at: float = 0.0  # of the last Health call the liveness watch made


def _cancelling() -> bool:
    """Whether this task is being cancelled, rather than a call cancelled under it."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class ShardPool:
    def __init__(self, uris: tuple[str, ...], health_check_interval_s: float) -> None:
        self.shards = [self._open(uri) for uri in uris]
        self._interval_s = health_check_interval_s
        self._checks: set[asyncio.Task] = set()

    @staticmethod
    def _open(uri: str) -> PooledShard:
        channel = grpc.aio.insecure_channel(uri, options=CHANNEL_OPTIONS)
        return PooledShard(uri=uri, channel=channel, client=ShardClient(channel))

    @staticmethod
    def _reopen(shard: PooledShard) -> grpc.aio.Channel:
        """A fresh channel for `shard`; returns the old one, still open."""
        old = shard.channel
        shard.channel = grpc.aio.insecure_channel(shard.uri, options=CHANNEL_OPTIONS)
        shard.client = ShardClient(shard.channel)
        return old

    async def connect(self, timeout_s: float) -> ShardInfo:
        """Wait for every shard's Info; the limits are the tightest across shards."""
        deadline = time.monotonic() + timeout_s
        infos = await asyncio.gather(*(self._wait_for_info(shard, deadline) for shard in self.shards))
        first = infos[0]
        for shard, info in zip(self.shards, infos):
            shard.max_batch_total_tokens = info.max_batch_total_tokens
            if info.model_id != first.model_id:
                log.warning("shard %s serves %r, shard %s serves %r", shard.uri, info.model_id,
                            self.shards[0].uri, first.model_id)
        return dataclasses.replace(
            first, max_total_tokens=min(info.max_total_tokens for info in infos),
            max_batch_total_tokens=min(info.max_batch_total_tokens for info in infos))

    async def tokenizer_files(self, timeout_s: float) -> dict[str, bytes]:
        """The served model's tokenizer files, from the first shard (connect() has checked
        that every shard answers)."""
        return await self.shards[0].client.tokenizer_files(timeout_s)

    async def _wait_for_info(self, shard: PooledShard, deadline: float) -> ShardInfo:
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise TimeoutError(f"shard {shard.uri} did not answer Info in time")
            try:
                # wait_for_ready: a shard that is still loading its model is not an error.
                return await shard.client.info(timeout_s=remaining_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    log.info("shard %s not ready: %s", shard.uri, exc.details())
                    await asyncio.sleep(min(0.5, max(remaining_s, 0)))

    def states(self) -> list[ShardState]:
        """What /metrics shows of each shard."""
        return [ShardState(uri=shard.uri, healthy=shard.healthy, num_outstanding=shard.num_outstanding,
                           num_reserved_tokens=shard.num_reserved_tokens,
                           max_batch_total_tokens=shard.max_batch_total_tokens,
                           num_waiting=shard.load.num_waiting if shard.load else 0,
                           num_running=shard.load.num_running if shard.load else 0) for shard in self.shards]

    @property
    def any_healthy(self) -> bool:
        return any(shard.healthy for shard in self.shards)

    @contextmanager
    def lease(self, num_tokens: int, num_calls: int = 1) -> Iterator[PooledShard]:
        """The healthy shard with the fewest requests outstanding among those whose KV
        budget still holds `num_tokens` (prompt + max_new_tokens of all `num_calls` calls
        it is leased for), counted as busy from this moment (not from the first gRPC
        read) so concurrent picks spread out. No room anywhere is a 429 now: the request
        would otherwise wait on the shard, for as long as the running ones take, where
        the router cannot see it."""
        healthy = [shard for shard in self.shards if shard.healthy]
        if not healthy:
            raise GenerationError("no healthy shard is available")
        fitting = [shard for shard in healthy
                   if shard.num_reserved_tokens + num_tokens <= shard.max_batch_total_tokens]
        if not fitting:
            raise Overloaded()
        shard = min(fitting, key=lambda candidate: candidate.num_outstanding)
        if not shard.num_outstanding:  # its silence counts from now, not from its last request
            shard.heard_at = time.monotonic()
        shard.num_outstanding += num_calls
        shard.num_reserved_tokens += num_tokens
        try:
            yield shard
        finally:
            shard.num_outstanding -= num_calls
            shard.num_reserved_tokens -= num_tokens

    async def generate(self, shard: PooledShard, request: ShardRequest) -> AsyncIterator[TokenDelta]:
        """Stream one request from a leased shard; a gRPC failure, or the shard falling
        silent (see DEAD_AFTER_S), becomes a GenerationError."""
        channel = shard.channel
        try:
            async for delta in shard.client.generate(request):
                shard.heard_at = time.monotonic()
                yield delta
        except grpc.aio.AioRpcError as exc:
            log.warning("request_id=%s call_id=%s shard %s failed: %s %s", request.log_id, request.call_id, shard.uri,
                        exc.code().name, exc.details())
            if exc.code() in _SHARD_DOWN_CODES:
                self._set_health(shard, False)
            self._check_soon(shard)  # confirm (or restore) the shard's health right away
            raise GenerationError(f"Server error: {exc.details() or exc.code().name}") from exc
        except asyncio.CancelledError:
            if shard.channel is channel or _cancelling():
                raise
            # The watch closed this call's channel (_fail_silent): not our task's cancellation.
            raise GenerationError(f"Server error: shard {shard.uri} stopped answering") from None

    async def run_health_checks(self) -> None:
        """Poll every shard forever, and watch those with requests open; a background task."""
        await asyncio.gather(self._poll(), self._watch())

    async def _poll(self) -> None:
        while True:
            await asyncio.gather(*(self.check(shard) for shard in self.shards))
            await asyncio.sleep(self._interval_s)

    async def check(self, shard: PooledShard) -> None:
        """One Health call: out of rotation if it fails, or gets no answer for as long as it
        takes to call a shard dead; back in once it answers."""
        problem = await self._ask_health(shard, max(2 * self._interval_s, DEAD_AFTER_S))
        if problem is not None and shard.healthy:
            log.warning("shard %s failed its health check: %s", shard.uri, problem)
        self._set_health(shard, problem is None)

    async def _ask_health(self, shard: PooledShard, timeout_s: float) -> str | None:
        """One Health call: records the load and that the shard was heard; returns why it
        failed, or None."""
        try:
            shard.load = await shard.client.health(timeout_s=timeout_s)
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _cancelling():
                raise
            return exc.details() if isinstance(exc, grpc.aio.AioRpcError) else "channel closed"
        shard.heard_at = time.monotonic()
        return None

    async def _watch(self) -> None:
        ticked_at = time.monotonic()
        while True:
            await asyncio.sleep(LIVENESS_TICK_S)
            now = time.monotonic()
            on_time, ticked_at = now - ticked_at < LIVENESS_TICK_S + LATE_TICK_S, now
            for shard in self.shards:
                if not shard.num_outstanding:
                    continue
                silent_s = now - shard.heard_at
                if silent_s > DEAD_AFTER_S and on_time:
                    self._fail_silent(shard, silent_s)
                elif silent_s > PROBE_AFTER_S and now - shard.probed_at >= PROBE_AFTER_S:
                    shard.probed_at = now
                    self._spawn(self._probe(shard))

    async def _probe(self, shard: PooledShard) -> None:
        await self._ask_health(shard, DEAD_AFTER_S)  # only its answer matters: the watch judges

    def _fail_silent(self, shard: PooledShard, silent_s: float) -> None:
        """Closing the channel cancels every call on it; a fresh one reconnects."""
        log.warning("shard %s sent nothing for %.1f s: failing its %d open requests", shard.uri,
                    silent_s, shard.num_outstanding)
        self._set_health(shard, False)
        self._spawn(self._reopen(shard).close())
        shard.heard_at = time.monotonic()  # no second verdict while its calls unwind

    def _check_soon(self, shard: PooledShard) -> None:
        self._spawn(self.check(shard))

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    @staticmethod
    def _set_health(shard: PooledShard, healthy: bool) -> None:
        if healthy != shard.healthy:
            log.warning("shard %s is %s", shard.uri, "back in rotation" if healthy else "out of rotation")
        shard.healthy = healthy

    async def close(self) -> None:
        for task in list(self._checks):
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        await asyncio.gather(*(shard.channel.close() for shard in self.shards))
