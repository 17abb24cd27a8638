"""`python -m router [flags]`: see `python -m router --help`.

Serves until SIGTERM or SIGINT, then drains (router/drain.py) and exits 0. web.run_app
is not used because it stops listening at the first signal: a load balancer would see
refused connections instead of the 503s that tell it to move traffic away."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from router.app import create_app
from router.config import RouterConfig
from router.connections import ServerLoop, raise_file_limit, runner_options
from router.state import DRAIN

log = logging.getLogger("router")

# After the drain: time for the last responses and error events to be written.
FLUSH_S = 1.0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = RouterConfig.from_args(argv)
    except ValueError as exc:
        print(f"Argument validation error: {exc}", file=sys.stderr)
        return 2
    raise_file_limit()
    try:
        with asyncio.Runner(loop_factory=ServerLoop) as runner:
            runner.run(serve(config))
    except (ValueError, TimeoutError, OSError) as exc:  # startup: bad limits, shards never ready, port taken
        log.error("router failed to start: %s", exc)
        return 1
    return 0


async def serve(config: RouterConfig) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, shutdown_timeout=FLUSH_S, **runner_options(config))
    await runner.setup()
    try:
        await web.TCPSite(runner, config.hostname, config.port).start()
        log.info("listening on http://%s:%d", config.hostname, config.port)
        await _wait_for_signal()
        drain = app[DRAIN]
        drain.begin(config.graceful_shutdown_timeout_s)
        # Past the grace period the cut-off requests still write their last event.
        if await drain.wait_idle(config.graceful_shutdown_timeout_s + FLUSH_S):
            log.info("drained: no request left")
        else:
            log.warning("%d requests still running after the drain; closing them", drain.num_active)
    finally:
        await runner.cleanup()


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: draining")


if __name__ == "__main__":
    sys.exit(main())
