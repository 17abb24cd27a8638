"""Liveness of a shard as other tools see it: the standard gRPC health service
(grpc.health.v1, what Kubernetes' native gRPC probes and grpc_health_probe call) and the
HTTP/2 keepalive policy of the gRPC server. `python -m shard.health HOST:PORT` is the
same check from a shell (the compose healthcheck), exit code 0 when serving.

Our own Shard.Health stays the router's check, since it also reports the shard's load."""
from __future__ import annotations

import sys
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_NAME = "sluice.shard.v1.Shard"

# The router pings after each second of quiet on a connection (router/shards.py; its
# streams' liveness is judged by silence, not by pings). gRPC's default answer to pings
# that frequent is a GOAWAY, which would drop every stream: accept them. Our own pings
# notice a router that vanished without a FIN, so its requests stop holding KV slots;
# they give it 4 s to answer, since a router on a busy host may not get a CPU for a
# second or two, and its streams are alive all the same.
SERVER_OPTIONS = (
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 400),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 4000),
    # grpcio waits this long for a ping's answer; keepalive_timeout_ms alone does not
    # fail a connection whose peer froze (the router's CHANNEL_OPTIONS say the same).
    ("grpc.http2.ping_timeout_ms", 4000),
)


class EngineHealth(health_pb2_grpc.HealthServicer):
    """SERVING while the engine thread runs. Watch is left unimplemented: probes use Check."""

    def __init__(self, is_serving: Callable[[], bool]):
        self._is_serving = is_serving

    async def Check(self, request, context):
        if request.service not in ("", SERVICE_NAME):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        serving = self._is_serving()
        return health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING)


def add_to_server(server: grpc.aio.Server, is_serving: Callable[[], bool]) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(EngineHealth(is_serving), server)


def check(target: str, timeout_s: float = 3.0) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


if __name__ == "__main__":
    sys.exit(0 if check(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051") else 1)
