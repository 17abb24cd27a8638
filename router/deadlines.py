"""Per-request deadlines (README, "Deadlines"): how long a request may take in all, and how
long it may wait for its first token (the shard's queue, then the prompt's prefill).

Each comes from, in order of precedence: TGI's native parameters (`request_timeout_s`,
`queue_timeout_s`), the `X-Request-Timeout` / `X-Queue-Timeout` headers (seconds), the
router's `--request-timeout-s` / `--queue-timeout-s`; all capped by
`--max-request-timeout-s`. ShardRun enforces them on the token stream: closing it cancels
the shard call, which frees the slot at the shard's next step."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from router.errors import DeadlineExceeded, QueueTimeout, ValidationError

T = TypeVar("T")

REQUEST_TIMEOUT_HEADER = "X-Request-Timeout"
QUEUE_TIMEOUT_HEADER = "X-Queue-Timeout"
MAX_TIMEOUT_S = 7 * 24 * 3600.0   # a bound on what a client may ask, whatever the flags say


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds from the request's start; None: no deadline."""

    total_s: float | None = None
    queue_s: float | None = None

    def narrowed(self, total_s: float | None, queue_s: float | None, max_s: float | None) -> Deadlines:
        """Values given closer to the request (its body) win; `max_s` caps both, and the
        wait for the first token never outlasts the whole request."""
        total = total_s if total_s is not None else self.total_s
        queue = queue_s if queue_s is not None else self.queue_s
        if max_s:
            total = min(total or max_s, max_s)
        if total is not None and queue is not None:
            queue = min(queue, total)
        return Deadlines(total, queue)


NO_DEADLINES = Deadlines()


def seconds(name: str, raw: object) -> float | None:
    """A timeout a client sent: a positive number of seconds (a header's text, or JSON)."""
    if raw is None:
        return None
    try:
        value = float(raw) if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT_S:
        raise ValidationError(f"`{name}` must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]. "
                              f"Given: {str(raw)[:50]!r}")
    return value


def from_headers(headers: Mapping[str, str], default: Deadlines, max_s: float | None) -> Deadlines:
    return default.narrowed(seconds(REQUEST_TIMEOUT_HEADER, headers.get(REQUEST_TIMEOUT_HEADER)),
                            seconds(QUEUE_TIMEOUT_HEADER, headers.get(QUEUE_TIMEOUT_HEADER)), max_s)


async def enforced(items: AsyncGenerator[T, None], deadlines: Deadlines,
                   started_at: float) -> AsyncGenerator[T, None]:
    """`items` until a deadline (counted from `started_at`, a time.perf_counter()) passes:
    then QueueTimeout before the first item (429), DeadlineExceeded after it."""
    loop = asyncio.get_running_loop()
    # The loop's clock and perf_counter differ: convert once.
    to_loop = loop.time() - time.perf_counter() + started_at
    total_at = None if deadlines.total_s is None else to_loop + deadlines.total_s
    queue_at = None if deadlines.queue_s is None else to_loop + deadlines.queue_s
    count = 0
    async with aclosing(items):
        while True:
            waiting_first = count == 0 and queue_at is not None
            limit_at = queue_at if waiting_first else total_at
            try:
                async with asyncio.timeout_at(limit_at) as timer:
                    item = await anext(items)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not timer.expired():
                    raise
                if count == 0:   # nothing generated yet: it never started, whichever deadline it was
                    raise QueueTimeout(deadlines.queue_s if waiting_first else deadlines.total_s) from None
                raise DeadlineExceeded(deadlines.total_s, count) from None
            count += 1
            yield item
