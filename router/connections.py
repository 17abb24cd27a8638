"""What a client connection may hold, and what the router does when it runs out of file
descriptors anyway: the runner's timeouts, the open-file limit, and an event loop that
backs off from a failed accept() once instead of spinning and logging."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource

from router.config import RouterConfig

log = logging.getLogger(__name__)

# The accept errors asyncio backs off from (selector_events._accept_connection).
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_ERROR_LOG_INTERVAL_S = 10.0


def runner_options(config: RouterConfig) -> dict:
    """Options for web.AppRunner, for `python -m router` and the tests alike."""
    return {
        # A client disconnect cancels its handler, which closes the gRPC stream so the shard
        # frees the slot at once, also for non-streaming requests (which write only at the end).
        "handler_cancellation": True,
        # aiohttp's timer runs from the connection's start or its last response and is not
        # reset by incoming bytes, so it is also the deadline for a request's headers.
        "keepalive_timeout": config.keep_alive_timeout_s,
    }


def raise_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: each connection holds a descriptor, and the
    soft limit is often 1,024 while the hard one is far higher."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. macOS refuses an unlimited hard limit
        log.warning("open-file limit stays at %d: %s", soft, exc)
        return
    log.info("open-file limit raised from %d to %d", soft, hard)


class AcceptErrorLog:
    """Loop exception handler: one line per interval for failed accept() calls, which asyncio
    reports with a traceback each; everything else goes to the default handler."""

    def __init__(self, interval_s: float = ACCEPT_ERROR_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._next_log = float("-inf")
        self._unlogged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS
                and context.get("message", "").startswith("socket.accept()")):
            loop.default_exception_handler(context)
            return
        now = loop.time()
        if now < self._next_log:
            self._unlogged += 1
            return
        since = f" ({self._unlogged} more times since the last report)" if self._unlogged else ""
        log.error("cannot accept new connections: %s%s; open connections are still served, new ones "
                  "wait in the listen backlog (retried every second)", exc.strerror, since)
        self._unlogged = 0
        self._next_log = now + self.interval_s


class _AcceptOnce:
    """The listening socket for one wakeup of asyncio's accept loop: after a resource error
    the rest of that wakeup sees an empty queue, as in CPython's fix for gh-151615. Before
    it, the loop tries up to `backlog` (128) more times, and each failure logs a traceback
    and schedules one more retry, so the retries multiply every second (README, "When
    things fail")."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self._failed = False

    def accept(self):
        if self._failed:
            raise BlockingIOError(errno.EAGAIN, "backing off after a resource error")
        try:
            return self.sock.accept()
        except OSError as exc:
            self._failed = exc.errno in RESOURCE_ERRNOS
            raise

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


class ServerLoop(asyncio.SelectorEventLoop):
    """The router's event loop: asyncio's, with one accept retry per second when out of
    file descriptors, and those errors logged once per interval."""

    def __init__(self) -> None:
        super().__init__()
        self.set_exception_handler(AcceptErrorLog())

    def _accept_connection(self, protocol_factory, sock, *args, **kwargs):
        # The retry asyncio schedules passes the wrapper back in.
        sock = sock.sock if isinstance(sock, _AcceptOnce) else sock
        return super()._accept_connection(protocol_factory, _AcceptOnce(sock), *args, **kwargs)
