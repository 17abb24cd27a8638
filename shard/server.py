"""The gRPC face of a shard. Each Generate call is an async generator over the events the
engine thread publishes for its request; cancelling the call aborts the request."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import signal

import grpc

from protos import shard_pb2_grpc
from shard import health, wire
from shard.config import ShardConfig
from shard.engine import Engine, TokenEvent
from shard.metrics import ShardMetrics, serve_metrics
from shard.runtime import ShardInfo, build_engine

log = logging.getLogger(__name__)


class ShardServicer(shard_pb2_grpc.ShardServicer):
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._streams: dict[str, asyncio.Queue] = {}
        self.engine: Engine | None = None
        self.info: ShardInfo | None = None

    def publish(self, events: list[TokenEvent]) -> None:
        """Called from the engine thread: one hop onto the loop per step, not per token."""
        self._loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[TokenEvent]) -> None:
        for event in events:
            stream = self._streams.get(event.request_id)
            if stream is not None:
                stream.put_nowait(event)

    async def Generate(self, request, context):
        seq = wire.to_sequence(request)
        if not seq.request_id or seq.request_id in self._streams:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"request_id {seq.request_id!r} is empty or already running")
        if not seq.prompt_ids or seq.stopping.max_new_tokens <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "input_ids and max_new_tokens must not be empty")
        if not seq.sampling.is_greedy and seq.sampling.seed is None:
            seq.sampling = dataclasses.replace(seq.sampling, seed=random.getrandbits(63))
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[seq.request_id] = stream
        finished = False
        try:
            refusal = self.engine.submit(seq)
            if refusal is not None:
                code = (grpc.StatusCode.INVALID_ARGUMENT if refusal.invalid_input
                        else grpc.StatusCode.RESOURCE_EXHAUSTED)
                await context.abort(code, refusal.message)
            while not finished:
                event = await stream.get()
                if event.error is not None:
                    finished = True
                    await context.abort(grpc.StatusCode.INTERNAL, event.error)
                finished = event.finished is not None
                yield wire.to_response(event)
        finally:
            self._streams.pop(seq.request_id, None)
            if not finished:  # client gone or call cancelled: free the slot at the next step
                self.engine.abort(seq.request_id)

    async def Health(self, request, context):
        if not self.engine.is_alive:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the engine thread has stopped")
        scheduler = self.engine.scheduler
        return wire.health_response(len(scheduler.running), len(scheduler.waiting))

    async def Info(self, request, context):
        info = self.info
        return wire.info_response(
            model_id=info.model_id, dtype=info.dtype, device=info.device,
            max_total_tokens=info.budget.max_total_tokens,
            max_batch_total_tokens=info.budget.max_batch_total_tokens,
            tokenizer_path=info.tokenizer_path, eos_token_id=min(info.eos_token_ids, default=0))


async def serve(config: ShardConfig) -> None:
    loop = asyncio.get_running_loop()
    servicer = ShardServicer(loop)
    metrics = ShardMetrics()
    # Loading takes seconds to minutes: keep it off the event loop.
    engine, info = await asyncio.to_thread(build_engine, config, servicer.publish, metrics)
    servicer.engine, servicer.info = engine, info
    engine.start()
    server = grpc.aio.server(options=health.SERVER_OPTIONS)
    shard_pb2_grpc.add_ShardServicer_to_server(servicer, server)
    health.add_to_server(server, lambda: engine.is_alive)
    port = server.add_insecure_port(f"{config.hostname}:{config.port}")
    serve_metrics(config.metrics_port, config.hostname)
    await server.start()
    log.info("shard ready on %s:%d", config.hostname, port)
    print(f"SHARD READY {config.hostname}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: cancelling open streams")
    await server.stop(grace=1.0)
    engine.stop()
