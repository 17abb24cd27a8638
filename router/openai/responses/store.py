"""The router's memory of finished responses, for GET /v1/responses/{id} and
`previous_response_id`. It lives in this process only (a follow-up must reach the same
router), and is bounded three ways so no client can grow it without limit: a count and a
total size (least recently used dropped first) and an age (a response is dropped
`ttl_s` after it finished). Only touched from the event loop thread: no lock."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from router.config import RouterConfig
from router.json_body import dumps


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object, as GET answers it
    input_items: tuple[dict[str, Any], ...]  # everything its prompt was made of, earlier turns too
    size: int  # bytes of compact JSON, what the byte bound counts
    expires_at: float  # on the store's clock


class ResponseStore:
    def __init__(self, max_count: int, max_bytes: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._by_use: OrderedDict[str, StoredResponse] = OrderedDict()  # least recently used first
        # Insertion order is expiry order (one TTL for all), so expired entries are a prefix.
        self._by_age: dict[str, None] = {}
        self.num_bytes = 0

    @classmethod
    def from_config(cls, config: RouterConfig) -> ResponseStore:
        return cls(config.responses_store_max_count, config.responses_store_max_bytes, config.responses_store_ttl_s)

    @property
    def enabled(self) -> bool:
        return self.max_count > 0

    def __len__(self) -> int:
        return len(self._by_use)

    def put(self, response: dict[str, Any], input_items: tuple[dict[str, Any], ...]) -> bool:
        """Keep `response`; False when the store is off or it alone is over the byte bound."""
        size = len(dumps(response)) + len(dumps(list(input_items)))
        if not self.enabled or size > self.max_bytes:
            return False
        self._drop(response["id"])
        self._by_use[response["id"]] = StoredResponse(response, input_items, size, self._clock() + self.ttl_s)
        self._by_age[response["id"]] = None
        self.num_bytes += size
        self._expire()
        while len(self._by_use) > self.max_count or self.num_bytes > self.max_bytes:
            self._drop(next(iter(self._by_use)))
        return True

    def get(self, response_id: str) -> StoredResponse | None:
        self._expire()
        stored = self._by_use.get(response_id)
        if stored is not None:
            self._by_use.move_to_end(response_id)
        return stored

    def delete(self, response_id: str) -> bool:
        self._expire()
        return self._drop(response_id)

    def _expire(self) -> None:
        now = self._clock()
        while self._by_age:
            oldest = next(iter(self._by_age))
            if self._by_use[oldest].expires_at > now:
                return
            self._drop(oldest)

    def _drop(self, response_id: str) -> bool:
        stored = self._by_use.pop(response_id, None)
        if stored is None:
            return False
        del self._by_age[response_id]
        self.num_bytes -= stored.size
        return True


# The Responses wing's own app key: the core (router/state.py) knows nothing of stored responses.
RESPONSE_STORE = web.AppKey("response_store", ResponseStore)
