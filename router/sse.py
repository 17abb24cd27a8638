"""Server-sent events for every streaming route: the headers, one
`data: {compact json}\\n\\n` frame per event (written and flushed at once, chunked), and
`:\\n\\n` keep-alive comments while the shard is silent. The `data: [DONE]` terminator is
for the OpenAI routes only: the text_generation client chokes on it on TGI's routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import TypeVar

from aiohttp import web
from aiohttp.http import HttpVersion11

from router.json_body import dumps
from router.resume import Recording

T = TypeVar("T")

KEEP_ALIVE = b":\n\n"
# With the space: huggingface_hub's chat_completion compares these exact bytes.
DONE = b"data: [DONE]\n\n"


def encode_event(payload: dict) -> bytes:
    return b"data: " + dumps(payload).encode("utf-8") + b"\n\n"


class EventStream:
    def __init__(self, headers: Mapping[str, str]) -> None:
        self.response = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # so nginx does not hold events back
            **headers,
        })
        self.recording: Recording | None = None   # resumable: events go there (router/resume.py)

    async def open(self, request: web.Request, deferred: bool = False) -> None:
        """Send the headers now, or (`deferred`) with the first write."""
        if request.version >= HttpVersion11:
            self.response.enable_chunked_encoding()
        self._request = request
        if not deferred:
            await self.response.prepare(request)

    async def _write(self, data: bytes) -> None:
        if not self.response.prepared:
            await self.response.prepare(self._request)
        await self.response.write(data)

    async def send(self, payload: dict) -> None:
        await self._event(encode_event(payload))

    async def keep_alive(self) -> None:
        if self.recording is not None:
            self.recording.ping()
        else:
            await self._write(KEEP_ALIVE)

    async def done(self) -> None:
        await self._event(DONE)

    async def _event(self, data: bytes) -> None:
        if self.recording is not None:
            self.recording.append(data)
        else:
            await self._write(data)

    async def relay(self, source: AsyncGenerator[T, None], interval_s: float) -> AsyncGenerator[T, None]:
        """`source`'s items, writing a keep-alive comment after every `interval_s` of silence."""
        async with aclosing(with_keep_alive(source, interval_s)) as items:
            async for item in items:
                if item is None:
                    await self.keep_alive()
                else:
                    yield item


async def with_keep_alive(source: AsyncGenerator[T, None], interval_s: float) -> AsyncIterator[T | None]:
    """Yield `source`'s items, and None after every `interval_s` of silence. A pending read
    is never cancelled by the timer, only when this generator is closed or cancelled."""
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(_next(source))
            done, _ = await asyncio.wait({pending}, timeout=interval_s)
            if not done:
                yield None
                continue
            finished, pending = pending, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()  # mark it retrieved so asyncio does not warn
        await source.aclose()


async def _next(source: AsyncIterator[T]) -> T:
    return await source.__anext__()
