"""Priority classes (README, "Priorities"): `high`, `normal` (the default) or `low`, from
TGI's `parameters.priority` (wins) or the `X-Priority` header. The router keeps the top
`--priority-reserve-share` of `--max-concurrent-requests` from low requests, so they are
shed first; the shard admits waiting requests in class order, with aging (shard flag
`--priority-aging-s`) so that none waits forever."""

from __future__ import annotations

from collections.abc import Mapping

from router.errors import ValidationError

PRIORITIES = ("high", "normal", "low")
PRIORITY_HEADER = "X-Priority"


def priority(name: str, raw: object) -> str | None:
    if raw is None:
        return None
    if raw not in PRIORITIES:
        raise ValidationError(f"`{name}` must be one of {', '.join(PRIORITIES)}. Given: {str(raw)[:50]!r}")
    return raw


def from_headers(headers: Mapping[str, str]) -> str:
    value = headers.get(PRIORITY_HEADER)
    return priority(PRIORITY_HEADER, None if value is None else value.strip().lower()) or "normal"


def max_permits(priority_class: str, max_concurrent_requests: int, reserve_share: float) -> int:
    """How many permits may be held when a request of this class asks for its own."""
    if priority_class != "low":
        return max_concurrent_requests
    return max(1, int(max_concurrent_requests * (1 - reserve_share)))
