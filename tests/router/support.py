"""Router test harness: fake shards on real grpc.aio servers and the real router app
(create_app + AppRunner, as `python -m router` runs it) on 127.0.0.1, all on one event
loop in a background thread, so tests can use blocking and async clients alike; plus
raw-socket helpers for byte-level HTTP checks."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from aiohttp import web

from protos import shard_pb2_grpc
from router.app import create_app
from router.config import RouterConfig
from router.connections import runner_options
from router.state import STATE, RouterState
from shard.health import SERVER_OPTIONS
from tests.fakes import FakeShard


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="server-loop", daemon=True)
        self._thread.start()

    def run(self, coro, timeout_s: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@dataclass
class ShardServer:
    fake: FakeShard
    server: grpc.aio.Server
    uri: str


@dataclass
class Stack:
    loop: LoopThread
    shards: list[ShardServer]
    runner: web.AppRunner
    url: str = ""
    _stopped: set[int] = field(default_factory=set)

    @property
    def fake(self) -> FakeShard:
        return self.shards[0].fake

    @property
    def state(self) -> RouterState:
        return self.runner.app[STATE]

    def stop_shard(self, index: int) -> None:
        self._stopped.add(index)
        self.loop.run(self.shards[index].server.stop(grace=None))

    def close(self) -> None:
        for shard in self.shards:  # let held requests finish so shutdown is quick
            shard.fake.script.block = False
        self.loop.run(self.runner.cleanup())
        for index, shard in enumerate(self.shards):
            if index not in self._stopped:
                self.loop.run(shard.server.stop(grace=None))


async def start_shard(fake: FakeShard) -> ShardServer:
    # A real shard's options: without them the router's keepalive pings draw a GOAWAY.
    server = grpc.aio.server(options=SERVER_OPTIONS)
    shard_pb2_grpc.add_ShardServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return ShardServer(fake=fake, server=server, uri=f"127.0.0.1:{port}")


async def start_router(config: RouterConfig) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(config), **runner_options(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def wait_until(predicate: Callable[[], bool], timeout_s: float = 2.0, interval_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


class RawHttp:
    """One HTTP/1.1 request over a plain socket, to see exact bytes and to hang up at
    any moment, which no client library lets a test do."""

    def __init__(self, url: str, path: str, body: dict | bytes, headers: dict[str, str] | None = None):
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
                 f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.sock.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + payload)
        self.buffer = b""

    def read_until(self, marker: bytes, count: int = 1) -> bytes:
        while self.buffer.count(marker) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        return self.buffer

    def read_headers(self) -> str:
        return self.read_until(b"\r\n\r\n").split(b"\r\n\r\n")[0].decode()

    def close(self) -> None:
        self.sock.close()


def parse_sse(body: bytes) -> list[dict]:
    """Strict parse: every frame is `data: <json>` followed by a blank line."""
    assert body.endswith(b"\n\n"), body[-50:]
    frames = body[:-2].split(b"\n\n")
    events = []
    for frame in frames:
        if frame == b":":
            continue  # keep-alive comment
        assert frame.startswith(b"data: ") and b"\n" not in frame, frame
        events.append(json.loads(frame[len(b"data: "):]))
    return events
