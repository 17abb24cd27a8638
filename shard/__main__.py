"""`python -m shard`: load the model and serve the gRPC contract."""
import logging
import os
import sys

# Before torch allocates anything: back large tensors (weights, KV cache) with transparent
# huge pages. A decode step streams every weight and much of the cache; 2 MB pages spare
# the TLB tens of thousands of misses per step (README, "Benchmarks").
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from shard.config import from_args
from shard.server import serve


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s shard %(levelname)s %(message)s")
    try:
        config = from_args(argv)
    except ValueError as exc:
        print(f"shard: argument error: {exc}", file=sys.stderr)
        return 2
    try:
        serve(config)
    except (ValueError, RuntimeError) as exc:
        logging.getLogger("shard").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
