"""Graceful drain on SIGTERM, so a load balancer can move traffic away without a stream
being cut: new requests get 503 (with Retry-After) and /health turns 503, requests already
running go on until they finish or the grace period ends, and the ones still running then
are ended with an error (a last SSE event on streams, a 503 otherwise).

The cut-off is an asyncio.timeout scope per running request, unscheduled until the drain
starts: no task or timer per token, and the cancellation it delivers closes the request's
token stream, which cancels its gRPC call, so the shard frees the slot as well."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.typedefs import Handler

from router.errors import ShuttingDown
from router.route_table import RouteTable

log = logging.getLogger(__name__)


class Drain:
    """Only touched from the event loop thread."""

    def __init__(self) -> None:
        self.draining = False
        self.num_active = 0  # requests inside a handler (not counting those refused)
        self._idle = asyncio.Event()
        self._deadline: float | None = None  # loop time at which running requests are cut
        self._scopes: set[asyncio.Timeout] = set()

    def begin(self, grace_s: float) -> None:
        """Refuse new requests from now on; cut running ones after `grace_s`."""
        if self.draining:
            return  # a second signal (the launcher's after a Ctrl-C) changes nothing
        self.draining = True
        self._deadline = asyncio.get_running_loop().time() + grace_s
        for scope in self._scopes:
            scope.reschedule(self._deadline)
        self._update_idle()
        log.warning("draining: %d requests running, %.1f s to finish", self.num_active, grace_s)

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no request is running, False if some still are after `timeout_s`."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    @asynccontextmanager
    async def cut_off(self) -> AsyncIterator[None]:
        """Run the block until it ends, or until the drain's grace period does: then the
        block is cancelled and ShuttingDown raised in its place."""
        scope = asyncio.timeout(self._deadline)
        try:
            async with scope:
                self._scopes.add(scope)
                try:
                    yield
                finally:
                    self._scopes.discard(scope)
        except TimeoutError:
            if scope.expired():
                raise ShuttingDown("The server shut down before the generation finished") from None
            raise

    async def run(self, handler: Handler, request: web.Request) -> web.StreamResponse:
        self.num_active += 1
        try:
            return await handler(request)
        finally:
            self.num_active -= 1
            self._update_idle()

    def _update_idle(self) -> None:
        if self.draining and self.num_active == 0:
            self._idle.set()


def drain_middleware(drain: Drain, routes: RouteTable):
    @web.middleware
    async def refuse_while_draining(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = routes.find(request)
        if drain.draining and not (route is not None and route.open_while_draining):
            raise ShuttingDown()
        return await drain.run(handler, request)

    return refuse_while_draining
