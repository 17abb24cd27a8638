"""The gRPC face of a shard. Each Generate call is an async generator over the events the
engine publishes for its request; cancelling the call aborts the request.

The engine loop runs on the process's main thread and the gRPC event loop on a thread of
its own: OpenMP teams started from a secondary thread ran the same forward much slower,
their workers sleeping between kernels instead of spinning."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import random
import signal
import threading
from collections.abc import Callable, Mapping

import grpc

from protos import shard_pb2_grpc
from shard import health, loader, wire
from shard.config import ShardConfig
from shard.engine import Engine, TokenEvent
from shard.metrics import ShardMetrics, serve_metrics
from shard.grammar import GrammarCompiler, GrammarError
from shard.runtime import ShardInfo, build_engine, build_grammar_compiler
from shard.tracing import ShardTracing

log = logging.getLogger(__name__)


class EventStreams:
    """Carries the events the engine thread publishes to the calls waiting for them: one
    queue per request, filled on the gRPC loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._queues: dict[str, asyncio.Queue] = {}

    def publish(self, events: list[TokenEvent]) -> None:
        """Called from the engine thread: one hop onto the loop per step, not per token."""
        self._loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[TokenEvent]) -> None:
        for event in events:
            stream = self._queues.get(event.request_id)
            if stream is not None:
                stream.put_nowait(event)

    def open(self, request_id: str) -> asyncio.Queue:
        self._queues[request_id] = asyncio.Queue()
        return self._queues[request_id]

    def close(self, request_id: str) -> None:
        self._queues.pop(request_id, None)


class ShardServicer(shard_pb2_grpc.ShardServicer):
    def __init__(self, engine: Engine, streams: EventStreams, info: ShardInfo,
                 tokenizer_files: Mapping[str, bytes], grammars: GrammarCompiler,
                 tracing: ShardTracing | None = None):
        self._engine, self._streams, self._grammars = engine, streams, grammars
        self._tracing = tracing or ShardTracing(None)
        self._call_numbers = itertools.count()
        # Built once: neither answer changes while the shard runs.
        self._info = wire.info_response(info)
        self._tokenizer = wire.tokenizer_response(tokenizer_files)

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
        if seq.grammar is not None:
            try:   # compiled on the grammar threads: steps and other calls go on meanwhile
                seq.constraint = await self._grammars.compile_off_loop(seq.grammar)
            except GrammarError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        stream = self._streams.open(seq.request_id)
        finished, traced = False, self._tracing.call(context.invocation_metadata())
        try:
            refusal = self._engine.submit(seq)
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
                if traced is not None:
                    traced.token(event.queue_time_s)
                yield wire.to_response(event)
        finally:
            if traced is not None:
                traced.end(finished)
            self._streams.close(seq.request_id)
            if not finished:  # client gone or call cancelled: free the slot at the next step
                self._engine.abort(seq.request_id)

    async def Health(self, request, context):
        if not self._engine.is_alive:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the engine thread has stopped")
        return wire.health_response(self._engine.load())

    async def Info(self, request, context):
        return self._info

    async def Tokenizer(self, request, context):
        return self._tokenizer


class GrpcThread:
    """The gRPC server and its asyncio loop, on a thread beside the engine. The loop is
    made by the caller, before the engine that publishes onto it."""

    def __init__(self, address: str, servicer: ShardServicer, is_serving: Callable[[], bool],
                 loop: asyncio.AbstractEventLoop):
        self._address, self._servicer, self._is_serving = address, servicer, is_serving
        self._loop = loop
        self._started = threading.Event()
        self._stop = asyncio.Event()      # bound to the loop that first waits on it
        self._error: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._main, name="grpc", daemon=True)

    def start(self) -> int:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise RuntimeError(f"cannot serve gRPC: {self._error}") from self._error
        return self.port

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):   # the loop already closed: nothing to stop
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _main(self) -> None:
        try:
            # asyncio.run's cleanup (tasks, async generators, executor), on the given loop.
            with asyncio.Runner(loop_factory=lambda: self._loop) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # surfaced by start(); after that, logged
            self._error = exc
            self._started.set()
            log.exception("gRPC server stopped")

    async def _serve(self) -> None:
        server = grpc.aio.server(options=health.SERVER_OPTIONS)
        shard_pb2_grpc.add_ShardServicer_to_server(self._servicer, server)
        health.add_to_server(server, self._is_serving)
        self.port = server.add_insecure_port(self._address)
        await server.start()
        self._started.set()
        await self._stop.wait()
        log.info("stopping: cancelling open streams")
        await server.stop(grace=1.0)


def serve(config: ShardConfig) -> None:
    loop = asyncio.new_event_loop()          # the gRPC thread's
    streams = EventStreams(loop)
    # Loaded on this (the main) thread, which then runs the engine loop.
    engine, info = build_engine(config, streams.publish, ShardMetrics())
    tokenizer_files = loader.tokenizer_files(info.model_dir)  # read once, for the router and grammars
    grammars = build_grammar_compiler(engine, tokenizer_files["tokenizer.json"].decode())
    tracing = ShardTracing(config.otlp_endpoint)
    servicer = ShardServicer(engine, streams, info, tokenizer_files, grammars, tracing)
    grpc_thread = GrpcThread(f"{config.hostname}:{config.port}", servicer,
                             lambda: engine.is_alive, loop)
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
        grammars.close()
        tracing.shutdown()
