"""Admission control: at most `max_concurrent_requests` shard calls queued or running.
A request that does not fit is refused at once (429), never queued in the router: the
shard's scheduler is the one queue, and a bounded one keeps latency and memory bounded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from router.errors import Overloaded
from router.priorities import max_permits


class Admission:
    """Only touched from the event loop thread, so a plain counter is enough."""

    def __init__(self, max_concurrent_requests: int, priority_reserve_share: float = 0.0) -> None:
        self.max_concurrent_requests = max_concurrent_requests
        self.priority_reserve_share = priority_reserve_share
        self.num_in_flight = 0

    def fits(self, num_requests: int, priority: str = "normal") -> bool:
        limit = max_permits(priority, self.max_concurrent_requests, self.priority_reserve_share)
        return self.num_in_flight + num_requests <= limit

    @contextmanager
    def admit(self, num_requests: int = 1, priority: str = "normal") -> Iterator[None]:
        """Hold `num_requests` permits (all or none) until the block exits, however it exits.
        A low-priority request may not take the reserved top share (router/priorities.py)."""
        if not self.fits(num_requests, priority):
            raise Overloaded()
        self.num_in_flight += num_requests
        try:
            yield
        finally:
            self.num_in_flight -= num_requests
