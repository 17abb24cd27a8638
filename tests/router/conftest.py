"""Fixtures for the router tests; the harness itself is in support.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from router.config import RouterConfig
from tests.fakes import FakeShard, build_tokenizer
from tests.router.support import LoopThread, Stack, start_router, start_shard


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    return build_tokenizer(str(tmp_path_factory.mktemp("tokenizer")))


@pytest.fixture
def make_stack(loop_thread, tokenizer_dir) -> Iterator[Callable[..., Stack]]:
    """make_stack(num_shards=1, **RouterConfig overrides) -> a running Stack."""
    stacks: list[Stack] = []

    def make(num_shards: int = 1, max_total_tokens: int = 64, **overrides) -> Stack:
        shards = [loop_thread.run(start_shard(FakeShard(tokenizer_dir, max_total_tokens)))
                  for _ in range(num_shards)]
        settings = {"keep_alive_interval_s": 15.0, "health_check_interval_s": 0.2,
                    "shard_connect_timeout_s": 5.0, **overrides}
        config = RouterConfig(shard_uris=tuple(shard.uri for shard in shards), port=0, **settings)
        runner, url = loop_thread.run(start_router(config))
        stack = Stack(loop=loop_thread, shards=shards, runner=runner, url=url)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def stack(make_stack) -> Stack:
    return make_stack()
