"""JSON in and out. `dumps` writes every JSON body and event the router sends. `parse_json`
turns a request body's bytes into a JSON value, with every failure a client's error (4xx): not
JSON, nested too deeply for the parser, or holding a string that is not UTF-8 (JSON's
`\\ud800` escape decodes to a lone surrogate, which nothing downstream can encode: gRPC,
the tokenizer, the SSE writer). Its cost grows with the body, so callers run it in a
worker thread, never on the event loop."""

from __future__ import annotations

import functools
import json

from router.errors import RequestBodyError
from router.schemas import shape_error

# Compact like serde_json; allow_nan=False because NaN/Infinity are not JSON (wire.py
# already maps the shard's non-finite logprobs to null).
dumps = functools.partial(json.dumps, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def parse_json(raw: bytes) -> object:
    try:
        value = json.loads(raw)
    except ValueError as exc:  # also UnicodeDecodeError
        raise RequestBodyError(400, f"Failed to parse the request body as JSON: {exc}") from None
    except RecursionError:
        raise RequestBodyError(400, "Failed to parse the request body as JSON: nested too deeply") from None
    path = _first_non_utf8(value)
    if path is not None:
        raise shape_error(f"{path}: invalid unicode code point: a lone surrogate cannot be encoded as UTF-8")
    return value


def _first_non_utf8(value: object) -> str | None:
    """The JSON path of the first string (key or value) that UTF-8 cannot encode. Iterative:
    a parsed body may be nested as deeply as the parser allows."""
    pending: list[tuple[str, object]] = [("body", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if not _is_utf8(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _is_utf8(key):
                    return f"{path} (a key)"
                pending.append((f"{path}.{key}" if path != "body" else key, child))
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
    return None


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
