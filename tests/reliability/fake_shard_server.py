"""`python -m tests.reliability.fake_shard_server --port N --tokenizer-dir D`: the scripted
shard (tests/fakes.py) on a real gRPC server in a process of its own, so a test can freeze
it with SIGSTOP the way a hung shard process looks from outside."""
from __future__ import annotations

import argparse
import asyncio

import grpc

from protos import shard_pb2_grpc
from shard.health import SERVER_OPTIONS
from tests.fakes import FakeShard


async def serve(port: int, tokenizer_dir: str, token_delay_s: float) -> None:
    fake = FakeShard(tokenizer_dir)
    fake.script.token_delay_s = token_delay_s
    server = grpc.aio.server(options=SERVER_OPTIONS)  # a real shard's keepalive policy
    shard_pb2_grpc.add_ShardServicer_to_server(fake, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("SHARD READY", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokenizer-dir", required=True)
    parser.add_argument("--token-delay-s", type=float, default=0.002)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.tokenizer_dir, args.token_delay_s))


if __name__ == "__main__":
    main()
