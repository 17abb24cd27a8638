"""ShardPool: one grpc.aio channel per shard, least-outstanding choice among the healthy
ones, and a background Health poll that takes failed shards out of rotation until they
answer again."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from router.errors import GenerationError
from router.wire import ShardClient, ShardInfo, ShardLoad, ShardRequest, TokenDelta

log = logging.getLogger(__name__)

# Codes that say "this shard is gone", not "this request was bad".
_SHARD_DOWN_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})

# A downed link or a powered-off host sends no FIN or RST, and a server stream has nothing
# for the router to send, so only HTTP/2 pings notice: every 0.5 s, given 1 s to answer,
# fails the host's streams within the 2 s the router promises. Shards accept pings this
# often (shard/health.py); gRPC would otherwise stop after two pings without data.
# Reconnects back off to 2 s at most, not gRPC's 120 s, so a host whose link or process
# comes back is in rotation again within a few health checks.
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 500),
    ("grpc.keepalive_timeout_ms", 1000),
    # What grpcio (1.85) actually waits for a ping's answer: keepalive_timeout_ms alone
    # leaves a frozen (SIGSTOP) shard's streams hanging (tests/reliability/test_faults.py).
    ("grpc.http2.ping_timeout_ms", 1000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


@dataclass(slots=True)
class Shard:
    uri: str
    channel: grpc.aio.Channel
    client: ShardClient
    healthy: bool = True
    num_outstanding: int = 0
    load: ShardLoad | None = None


class ShardPool:
    def __init__(self, uris: tuple[str, ...], health_check_interval_s: float) -> None:
        self.shards = [self._open(uri) for uri in uris]
        self._interval_s = health_check_interval_s
        self._checks: set[asyncio.Task] = set()

    @staticmethod
    def _open(uri: str) -> Shard:
        channel = grpc.aio.insecure_channel(uri, options=CHANNEL_OPTIONS)
        return Shard(uri=uri, channel=channel, client=ShardClient(channel))

    async def connect(self, timeout_s: float) -> ShardInfo:
        """Wait for every shard's Info; the limits are the tightest across shards."""
        deadline = time.monotonic() + timeout_s
        infos = await asyncio.gather(*(self._wait_for_info(shard, deadline) for shard in self.shards))
        first = infos[0]
        for shard, info in zip(self.shards, infos):
            if info.model_id != first.model_id:
                log.warning("shard %s serves %r, shard %s serves %r", shard.uri, info.model_id,
                            self.shards[0].uri, first.model_id)
        return dataclasses.replace(
            first, max_total_tokens=min(info.max_total_tokens for info in infos),
            max_batch_total_tokens=min(info.max_batch_total_tokens for info in infos))

    async def _wait_for_info(self, shard: Shard, deadline: float) -> ShardInfo:
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

    @property
    def any_healthy(self) -> bool:
        return any(shard.healthy for shard in self.shards)

    @contextmanager
    def lease(self) -> Iterator[Shard]:
        """The healthy shard with the fewest requests outstanding, counted as busy from
        this moment (not from the first gRPC read) so concurrent picks spread out."""
        healthy = [shard for shard in self.shards if shard.healthy]
        if not healthy:
            raise GenerationError("no healthy shard is available")
        shard = min(healthy, key=lambda candidate: candidate.num_outstanding)
        shard.num_outstanding += 1
        try:
            yield shard
        finally:
            shard.num_outstanding -= 1

    async def generate(self, shard: Shard, request: ShardRequest) -> AsyncIterator[TokenDelta]:
        """Stream one request from a leased shard; a gRPC failure becomes a GenerationError."""
        try:
            async for delta in shard.client.generate(request):
                yield delta
        except grpc.aio.AioRpcError as exc:
            log.warning("request_id=%s call_id=%s shard %s failed: %s %s", request.log_id, request.call_id, shard.uri,
                        exc.code().name, exc.details())
            if exc.code() in _SHARD_DOWN_CODES:
                self._set_health(shard, False)
            self._check_soon(shard)  # confirm (or restore) the shard's health right away
            raise GenerationError(f"Server error: {exc.details() or exc.code().name}") from exc

    async def run_health_checks(self) -> None:
        """Poll every shard forever; run as a background task."""
        while True:
            await asyncio.gather(*(self.check(shard) for shard in self.shards))
            await asyncio.sleep(self._interval_s)

    async def check(self, shard: Shard) -> None:
        try:
            shard.load = await shard.client.health(timeout_s=max(2 * self._interval_s, 1.0))
        except grpc.aio.AioRpcError as exc:
            if shard.healthy:
                log.warning("shard %s failed its health check: %s", shard.uri, exc.details())
            self._set_health(shard, False)
        else:
            self._set_health(shard, True)

    def _check_soon(self, shard: Shard) -> None:
        task = asyncio.get_running_loop().create_task(self.check(shard))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    @staticmethod
    def _set_health(shard: Shard, healthy: bool) -> None:
        if healthy != shard.healthy:
            log.warning("shard %s is %s", shard.uri, "back in rotation" if healthy else "out of rotation")
        shard.healthy = healthy

    async def close(self) -> None:
        for task in list(self._checks):
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        await asyncio.gather(*(shard.channel.close() for shard in self.shards))
