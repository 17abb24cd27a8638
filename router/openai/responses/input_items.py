"""GET /v1/responses/{response_id}/input_items: the items a stored response was made from,
earlier turns included (what `previous_response_id` continued; its instructions are not
items), as OpenAI's item shapes in OpenAI's cursor page. The store keeps a conversation's
items plain (items.py); each gets its id when the response is stored (with_ids), so a
page's `after` names the same item on every read, and a follow-up lists the earlier
turns under the ids they had."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.errors import InvalidParameter
from router.openai.responses.items import Item

ID_PREFIXES = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_"}
ORDERS = ("asc", "desc")
LIMITS = (1, 100)
DEFAULT_LIMIT = 20
# Parameters OpenAI's route takes and this one does not serve: refused rather than ignored,
# since ignoring them would answer another page than the one asked for.
REFUSED = ("include", "include[]", "before")


@dataclass(frozen=True, slots=True)
class PageQuery:
    order: str = "desc"  # OpenAI's default: the newest item first
    limit: int = DEFAULT_LIMIT
    after: str | None = None  # an item id: the page starts after it, in `order`


def with_ids(items: tuple[Item, ...]) -> tuple[Item, ...]:
    """Every item with an id unique in its conversation: its own (a client's, or the one an
    earlier turn was stored with) unless an earlier item took it, else a new one."""
    seen: set[str] = set()
    named = []
    for item in items:
        if item.get("id") is None or item["id"] in seen:
            item = {**item, "id": ID_PREFIXES[item["type"]] + uuid.uuid4().hex}
        seen.add(item["id"])
        named.append(item)
    return tuple(named)


def parse_page_query(query: Mapping[str, str]) -> PageQuery:
    for name in REFUSED:
        if query.get(name):
            raise InvalidParameter(name.removesuffix("[]"), f"`{name.removesuffix('[]')}` is not supported "
                                                            f"when listing input items")
    order = query.get("order", "desc")
    if order not in ORDERS:
        raise InvalidParameter("order", f"`order` must be `asc` or `desc`. Given: `{order[:50]}`")
    low, high = LIMITS
    raw_limit = query.get("limit", str(DEFAULT_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit() and low <= int(raw_limit) <= high):
        raise InvalidParameter("limit", f"`limit` must be an integer from {low} to {high}. "
                                        f"Given: `{raw_limit[:50]}`")
    return PageQuery(order, int(raw_limit), query.get("after"))


def page(items: tuple[Item, ...], query: PageQuery) -> dict[str, Any]:
    """One page of `items` (stored with ids), as OpenAI's ResponseItemList."""
    ordered = items if query.order == "asc" else items[::-1]
    start = 0
    if query.after is not None:
        ids = [item["id"] for item in ordered]
        if query.after not in ids:
            raise InvalidParameter("after", f"`after`: no input item of this response has the id "
                                            f"'{query.after[:100]}'")
        start = ids.index(query.after) + 1
    data = [listed(item) for item in ordered[start:start + query.limit]]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": start + query.limit < len(ordered)}


def listed(item: Item) -> dict[str, Any]:
    """One stored item as OpenAI lists it: an input message (user, system, developer), an
    output message (assistant), a function_call or a function_call_output. A message's
    text is one part: the store joined its parts, as the prompt did."""
    base = {"id": item["id"], "type": item["type"], "status": "completed"}
    if item["type"] == "function_call":
        return {**base, "call_id": item["call_id"], "name": item["name"], "arguments": item["arguments"]}
    if item["type"] == "function_call_output":
        return {**base, "call_id": item["call_id"], "output": item["output"]}
    if item["role"] == "assistant":
        part = {"type": "output_text", "text": item["content"], "annotations": [], "logprobs": []}
    else:
        part = {"type": "input_text", "text": item["content"]}
    return {**base, "role": item["role"], "content": [part]}
