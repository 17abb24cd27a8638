"""`python -m router [flags]`: see `python -m router --help`."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from router.app import RUNNER_OPTIONS, create_app
from router.config import RouterConfig


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = RouterConfig.from_args(argv)
    except ValueError as exc:
        print(f"Argument validation error: {exc}", file=sys.stderr)
        return 2
    try:
        web.run_app(create_app(config), host=config.hostname, port=config.port,
                    print=lambda message: logging.getLogger("router").info(message.strip()),
                    **RUNNER_OPTIONS)
    except (ValueError, TimeoutError, OSError) as exc:  # startup: bad limits, shards never ready, port taken
        logging.getLogger("router").error("router failed to start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
