"""Admission control: at most `max_concurrent_requests` shard calls queued or running.
A request that does not fit is refused at once (429), never queued in the router: the
shard's scheduler is the one queue, and a bounded one keeps latency and memory bounded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from router.errors import Overloaded


class Admission:
    """Only touched from the event loop thread, so a plain counter is enough."""

    def __init__(self, max_concurrent_requests: int) -> None:
        self.max_concurrent_requests = max_concurrent_requests
        self.num_in_flight = 0

    @contextmanager
    def admit(self, num_requests: int = 1) -> Iterator[None]:
        """Hold `num_requests` permits (all or none) until the block exits, however it exits."""
        if self.num_in_flight + num_requests > self.max_concurrent_requests:
            raise Overloaded()
        self.num_in_flight += num_requests
        try:
            yield
        finally:
            self.num_in_flight -= num_requests
