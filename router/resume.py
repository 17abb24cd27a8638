"""Resumable streams (README, "Resumable streams"), on with --stream-resume-window-s.

A stream's events are recorded as they are made, each with an SSE `id:`, and the
response names the recording in `X-Resume-Token`, a secret the router makes. If the
client's connection drops, generation goes on: `GET /stream/{token}` with `Last-Event-ID`
(what a browser's EventSource sends by itself) replays the events after that id, then
the rest live. A stream nobody reads for the window is cancelled (its shard call too);
a finished one is kept for the window, then dropped. Every recording is bounded in
events and bytes, and the store in their number."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict

from aiohttp import web

from router.errors import RouterError, ValidationError

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_EVENTS = 16384            # one stream's recorded events; older ones are dropped first
MAX_BYTES = 4 * 1024 * 1024   # and their bytes
MAX_TOTAL_BYTES = 256 * 1024 * 1024   # every recording of the process together
KEEP_ALIVE = b":\n\n"


class StreamGone(RouterError):
    status = 404
    error_type = "not_found"
    failure_label = "validation"

    def __init__(self) -> None:
        super().__init__("Unknown or expired stream: resume tokens are valid for --stream-resume-window-s")


class StreamBusy(RouterError):
    status = 409
    error_type = "conflict"
    failure_label = "validation"

    def __init__(self) -> None:
        super().__init__("The stream already has a reader")


class EventsDropped(RouterError):
    status = 410
    error_type = "gone"
    failure_label = "validation"

    def __init__(self, oldest: int) -> None:
        super().__init__(f"Events before id {oldest} are no longer kept; resume from {oldest - 1} or later")


class Recording:
    """One stream's events. Written by its generation, read by one reader at a time."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.frames: list[bytes] = []
        self.first_id = 1            # the id of frames[0]
        self.num_bytes = 0
        self.num_pings = 0
        self.finished = False
        self.has_reader = False
        self.detached_at: float | None = None   # monotonic; None while read or running unread
        self._changed = asyncio.Event()

    @property
    def last_id(self) -> int:
        return self.first_id + len(self.frames) - 1

    def append(self, data: bytes) -> None:
        self.frames.append(b"id: %d\n" % (self.last_id + 1) + data)
        self.num_bytes += len(self.frames[-1])
        while len(self.frames) > MAX_EVENTS or (self.num_bytes > MAX_BYTES and len(self.frames) > 1):
            self.num_bytes -= len(self.frames.pop(0))
            self.first_id += 1
        self._changed.set()

    def ping(self) -> None:
        self.num_pings += 1
        self._changed.set()

    def finish(self) -> None:
        self.finished = True
        self._changed.set()

    def frames_after(self, event_id: int) -> list[bytes]:
        if event_id + 1 < self.first_id:
            raise EventsDropped(self.first_id)
        return self.frames[max(0, event_id + 1 - self.first_id):]

    async def changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()


class ResumableStreams:
    """The recordings of this router process, by token; at most `max_streams` of them."""

    def __init__(self, window_s: float, max_streams: int) -> None:
        self.window_s = window_s
        self.max_streams = max_streams
        self._recordings: OrderedDict[str, Recording] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def open(self) -> Recording:
        self._expire()
        total = sum(recording.num_bytes for recording in self._recordings.values())
        while self._recordings and (len(self._recordings) >= self.max_streams or total > MAX_TOTAL_BYTES):
            # The oldest finished one goes first, else the oldest: it can no longer be resumed.
            token = next((t for t, r in self._recordings.items() if r.finished), next(iter(self._recordings)))
            total -= self._recordings.pop(token).num_bytes
        recording = Recording(secrets.token_urlsafe(24))
        self._recordings[recording.token] = recording
        return recording

    def get(self, token: str) -> Recording | None:
        self._expire()
        return self._recordings.get(token)

    def forget_later(self, recording: Recording) -> None:
        recording.detached_at = time.monotonic()

    def _expire(self) -> None:
        now = time.monotonic()
        for token, recording in list(self._recordings.items()):
            if recording.detached_at is not None and now - recording.detached_at > self.window_s:
                del self._recordings[token]


RESUMABLE_STREAMS = web.AppKey("resumable_streams", ResumableStreams)


async def pump(recording: Recording, response: web.StreamResponse, request: web.Request,
               after_id: int) -> None:
    """Write the recording's events after `after_id` to `response` (prepared on the first
    write), then the new ones as they come, until the recording ends."""
    cursor, pings = after_id, recording.num_pings
    while True:
        frames = recording.frames_after(cursor)
        if (frames or recording.num_pings > pings) and not response.prepared:
            await response.prepare(request)
        for frame in frames:
            await response.write(frame)
        cursor += len(frames)
        if recording.num_pings > pings:
            pings = recording.num_pings
            await response.write(KEEP_ALIVE)
        if recording.finished and cursor >= recording.last_id:
            return
        await recording.changed()


def last_event_id(request: web.Request) -> int:
    """The reader's last event: `Last-Event-ID` (EventSource's), or `?last_event_id=`."""
    raw = request.headers.get("Last-Event-ID", request.query.get("last_event_id", "0")).strip() or "0"
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise ValidationError(f"`Last-Event-ID` must be an event id (a number). Given: {raw[:50]!r}")
    return int(raw)


async def resume_stream(request: web.Request) -> web.StreamResponse:
    """GET /stream/{token}: the stream's events after Last-Event-ID, then the rest live."""
    streams = request.app[RESUMABLE_STREAMS]
    recording = streams.get(request.match_info["token"]) if streams.enabled else None
    if recording is None:
        raise StreamGone()
    if recording.has_reader:
        raise StreamBusy()
    after = last_event_id(request)
    recording.frames_after(after)   # 410 before any header when those events are gone
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    response.enable_chunked_encoding()
    recording.has_reader = True
    try:
        await pump(recording, response, request, after)
    finally:
        recording.has_reader = False
    if not response.prepared:   # nothing new and already finished: an empty stream
        await response.prepare(request)
    return response
