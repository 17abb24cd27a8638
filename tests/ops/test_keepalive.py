"""The keepalive policy router and shard must agree on: the router's HTTP/2 pings (a
backstop beside its liveness watch, router/shards.py) come after each second of quiet, so
a shard must accept pings that often even while a stream is silent (queued, or in a long prefill). gRPC's default server
answers the third such ping with GOAWAY "too_many_pings", failing every stream."""
from __future__ import annotations

import asyncio
import time

import grpc

from protos import shard_pb2, shard_pb2_grpc
from router.shards import CHANNEL_OPTIONS
from shard.health import SERVER_OPTIONS

SILENCE_S = 5.0  # gRPC's default policy fails such a stream after about 4.5 s


class SilentShard(shard_pb2_grpc.ShardServicer):
    async def Generate(self, request, context):
        await asyncio.sleep(SILENCE_S)
        yield shard_pb2.GenerateResponse(token=shard_pb2.Token(id=7))


async def silent_stream() -> list[int]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    shard_pb2_grpc.add_ShardServicer_to_server(SilentShard(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
            call = shard_pb2_grpc.ShardStub(channel).Generate(shard_pb2.GenerateRequest(request_id="r"))
            return [message.token.id async for message in call]
    finally:
        await server.stop(None)


def test_a_stream_silent_for_seconds_survives_the_routers_keepalive_pings():
    started = time.monotonic()
    assert asyncio.run(silent_stream()) == [7]
    assert time.monotonic() - started >= SILENCE_S
