"""What a step's token masks cost the shard, measured alone (no model, no server): N
constrained rows of one schema, their masks filled by llguidance and unpacked to the
sampler's bool matrix (shard/token_masks.allowed_tokens, what the runner calls each step),
then applied to a [N, vocab] logits matrix as the sampler applies them (masked_fill_).
Each row then takes a random allowed token, so the rows wander through their grammars'
states as answers do; a row whose grammar completes starts over.

    python -m tests.bench_masks [--rows 8] [--steps 128] [--schema bench|person]

Needs the default SmolLM2 (`make run` or any shard test caches it) for its tokenizer.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy
import torch

from shard.config import from_args
from shard.grammar import GrammarCompiler
from shard.loader import resolve
from shard.sequence import GrammarSpec
from shard.token_masks import allowed_tokens
from tests.bench import BENCH_SCHEMA

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3}},
    "required": ["name", "age", "hobbies"], "additionalProperties": False}
SCHEMAS = {"bench": BENCH_SCHEMA, "person": PERSON}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(num_rows: int, num_steps: int, schema: dict, seed: int = 0) -> dict[str, list[float]]:
    model_dir = resolve(None, from_args([]).cache_dir).path
    config = json.loads((model_dir / "config.json").read_text())
    vocab_size = config["vocab_size"]
    compiler = GrammarCompiler((model_dir / "tokenizer.json").read_text(), frozenset({config["eos_token_id"]}), vocab_size)
    spec = GrammarSpec("json_schema", json.dumps(schema))
    rows = [compiler.compile(spec) for _ in range(num_rows)]
    logits = torch.zeros(num_rows, vocab_size)
    rng = numpy.random.default_rng(seed)
    times: dict[str, list[float]] = {"fill and unpack": [], "apply": []}
    for _ in range(num_steps):
        started = time.perf_counter()
        allowed, errors = allowed_tokens(rows, vocab_size)
        filled = time.perf_counter()
        logits.masked_fill_(~allowed, float("-inf"))
        applied = time.perf_counter()
        assert not any(errors), errors
        times["fill and unpack"].append((filled - started) * 1e3)
        times["apply"].append((applied - filled) * 1e3)
        for index, row in enumerate(rows):
            choices = numpy.flatnonzero(allowed[index].numpy())
            row.advance(int(rng.choice(choices)))
            if row.is_complete:
                rows[index] = compiler.compile(spec)
    compiler.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--schema", choices=sorted(SCHEMAS), default="bench")
    args = parser.parse_args()
    times = measure(args.rows, args.steps, SCHEMAS[args.schema])
    print(f"{args.rows} rows, {args.steps} steps, schema {args.schema!r}: ms per step")
    for name, values in times.items():
        print(f"  {name:16} mean {statistics.fmean(values):.2f}  p50 {percentile(values, 0.5):.2f}"
              f"  p90 {percentile(values, 0.9):.2f}  max {max(values):.2f}")


if __name__ == "__main__":
    main()
