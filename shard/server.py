"""The gRPC face of a shard. Each Generate call is an async generator over the events the
engine publishes for its request; cancelling the call aborts the request.

The engine loop runs on the process's main thread and the gRPC event loop on a thread of
its own: OpenMP teams started from a secondary thread ran the same forward about 1.8x
slower on this CPU (13.5 ms against 25 ms a one-row step), their workers sleeping
between kernels instead of spinning."""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import signal
import threading

import grpc

from protos import shard_pb2_grpc
from shard import health, wire
from shard.config import ShardConfig
from shard.engine import Engine, TokenEvent
from shard.metrics import ShardMetrics, serve_metrics
from shard.runtime import ShardInfo, build_engine

log = logging.getLogger(__name__)


class ShardServicer(shard_pb2_grpc.ShardServicer):
    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None   # set by GrpcThread
        self._streams: dict[str, asyncio.Queue] = {}
        self._call_numbers = itertools.count()
        self.engine: Engine | None = None
        self.info: ShardInfo | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

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
        # The engine's key for this call is made here, unique per call: an id the caller
        # chose (and may reuse while an earlier call's events are still in flight) would
        # let one call receive another's tokens. The caller's id stays readable in logs.
        seq.request_id = f"{next(self._call_numbers)}:{seq.request_id}"
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


class GrpcThread:
    """The gRPC server and its asyncio loop, on a thread beside the engine."""

    def __init__(self, config: ShardConfig, servicer: ShardServicer):
        self._config, self._servicer = config, servicer
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._main, name="grpc", daemon=True)

    def start(self) -> int:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise RuntimeError(f"cannot serve gRPC: {self._error}") from self._error
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start(); after that, logged
            self._error = exc
            self._started.set()
            log.exception("gRPC server stopped")

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._servicer.attach(self._loop)
        engine, config = self._servicer.engine, self._config
        server = grpc.aio.server(options=health.SERVER_OPTIONS)
        shard_pb2_grpc.add_ShardServicer_to_server(self._servicer, server)
        health.add_to_server(server, lambda: engine.is_alive)
        self.port = server.add_insecure_port(f"{config.hostname}:{config.port}")
        await server.start()
        self._started.set()
        await self._stop.wait()
        log.info("stopping: cancelling open streams")
        await server.stop(grace=1.0)


def serve(config: ShardConfig) -> None:
    servicer = ShardServicer()
    # Loaded on this (the main) thread, which then runs the engine loop.
    engine, info = build_engine(config, servicer.publish, ShardMetrics())
    servicer.engine, servicer.info = engine, info
    grpc_thread = GrpcThread(config, servicer)
    port = grpc_thread.start()
    serve_metrics(config.metrics_port, config.hostname)
    log.info("shard ready on %s:%d", config.hostname, port)
    print(f"SHARD READY {config.hostname}:{port}", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: engine.stop())
    try:
        engine.run()
    finally:
        grpc_thread.stop()
