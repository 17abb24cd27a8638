"""`make bench`: throughput and latency of the real stack, streamed over HTTP, next to
HF transformers' generate() on the same model in the same run. A benchmark, not a test:
it prints figures and asserts nothing.

    make bench                                   # 1, 8, 32 streams, 128 new tokens
    make bench ARGS="--concurrency 1 8 32 128 --max-new-tokens 64"
    make bench ARGS="--url http://127.0.0.1:8080"   # an already running sluice
    make bench ARGS="--compare-url http://127.0.0.1:8081 --compare-api llamacpp"
                          # and a llama.cpp llama-server, same prompts, same run, with ratios
    make bench ARGS="--device cuda --shape llama3.1-8b"   # random weights, a named shape
    make bench ARGS="--concurrency 32 --constrained 8"
                          # and 32 streams, 8 of them held by a JSON Schema grammar: the
                          # other 24's per-token latency beside an all-unconstrained run's,
                          # every stream to max_new_tokens, twice, alternating
    make bench ARGS="--contention 1"   # each level also with 1 busy loop beside the stack
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass

import aiohttp

from tests.bench_report import print_constrained, print_contention, print_ratios, print_table
from tests.conftest import Process, free_port, http_ok

QUESTIONS = [
    "What is Deep Learning?", "Explain how a transformer model works.",
    "Write a short poem about the sea.", "What are the benefits of exercise?",
    "Describe the water cycle.", "How do vaccines work?", "What is a black hole?",
    "Give me three tips for learning a new language.",
]


def chatml(question: str) -> str:
    return (f"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
            f"Hugging Face<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n")


@dataclass(frozen=True, slots=True)
class StreamTiming:
    first_token_s: float
    gaps_s: list[float]
    num_tokens: int


# Long enough that a constrained stream runs to max_new_tokens as the others do.
BENCH_SCHEMA = {"type": "array", "minItems": 64, "items": {"type": "string", "maxLength": 12}}


def request_for(api: str, prompt: str, max_new_tokens: int, kind: str = "plain") -> tuple[str, dict]:
    """The path and body of one streamed greedy request in each server's own API. `kind`
    "fixed" runs to max_new_tokens whatever EOS says; "constrained" too, held by BENCH_SCHEMA."""
    if kind != "plain":
        if api != "tgi":
            raise ValueError("--constrained drives sluice's own API")
        parameters = {"max_new_tokens": max_new_tokens, "ignore_eos_token": True}
        if kind == "constrained":
            parameters["grammar"] = {"type": "json", "value": BENCH_SCHEMA}
        return "/generate_stream", {"inputs": prompt, "parameters": parameters}
    if api == "llamacpp":
        return "/completion", {"prompt": prompt, "n_predict": max_new_tokens, "stream": True,
                               "temperature": 0, "cache_prompt": True}
    if api == "openai":
        return "/v1/completions", {"model": "bench", "prompt": prompt, "max_tokens": max_new_tokens,
                                   "temperature": 0, "stream": True}
    return "/generate_stream", {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}}


async def one_stream(session: aiohttp.ClientSession, url: str, prompt: str,
                     max_new_tokens: int, api: str = "tgi", kind: str = "plain") -> StreamTiming:
    path, body = request_for(api, prompt, max_new_tokens, kind)
    started = time.perf_counter()
    arrivals = []
    async with session.post(url + path, json=body) as response:
        async for line in response.content:
            if line.startswith(b"data:") and not line.startswith(b"data: [DONE]"):
                arrivals.append(time.perf_counter())
                if b'{"error"' in line[:16]:
                    raise RuntimeError(line.decode())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return StreamTiming(arrivals[0] - started, gaps, len(arrivals))


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def run_level(url: str, concurrency: int, max_new_tokens: int, api: str = "tgi",
                    num_constrained: int = 0, fixed_length: bool = False) -> dict:
    """The level's figures; with `num_constrained`, also those of its "constrained" streams
    (the first ones) and of the "unconstrained" rest apart. With `fixed_length` (implied by
    `num_constrained`) every stream runs to max_new_tokens: the batch is the same whoever
    holds a grammar, so only the grammars' cost can tell two runs apart."""
    fixed = "fixed" if fixed_length or num_constrained else "plain"
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:
        await one_stream(session, url, chatml(QUESTIONS[0]), 4, api,  # warm the path
                         "constrained" if num_constrained else fixed)
        started = time.perf_counter()
        timings = await asyncio.gather(*(
            one_stream(session, url, chatml(QUESTIONS[i % len(QUESTIONS)]), max_new_tokens, api,
                       "constrained" if i < num_constrained else fixed)
            for i in range(concurrency)))
        wall_s = time.perf_counter() - started
    figures = summarize(timings, wall_s, concurrency)
    if num_constrained:
        figures["constrained"] = summarize(timings[:num_constrained], wall_s, num_constrained)
        figures["unconstrained"] = summarize(timings[num_constrained:], wall_s, concurrency - num_constrained)
    return figures


def summarize(timings: list[StreamTiming], wall_s: float, concurrency: int) -> dict:
    gaps = [g for t in timings for g in t.gaps_s]
    firsts = [t.first_token_s for t in timings]
    return {"streams": concurrency, "tokens": sum(t.num_tokens for t in timings),
            "tok_s": sum(t.num_tokens for t in timings) / wall_s,
            "ttft_p50_ms": 1e3 * percentile(firsts, 0.5), "ttft_p99_ms": 1e3 * percentile(firsts, 0.99),
            "itl_p50_ms": 1e3 * percentile(gaps, 0.5), "itl_p99_ms": 1e3 * percentile(gaps, 0.99)}


def hf_generate(model_dir: str, batch_sizes: list[int], max_new_tokens: int, dtype: str,
                device: str = "cpu", dummy: bool = False) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if dummy:   # a named shape: random weights, as the shard has them
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir),
                                                 dtype=getattr(torch, dtype))
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    model = model.to(device).eval()
    results = {}
    for batch in batch_sizes:
        prompts = [chatml(QUESTIONS[i % len(QUESTIONS)]) for i in range(batch)]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id or 0)
        generated = (out.shape[1] - inputs["input_ids"].shape[1]) * batch
        results[batch] = generated / (time.perf_counter() - started)
    return results


@contextlib.contextmanager
def busy_loops(count: int):
    """`count` processes that each spin on a core, as a neighbour's compute-bound job does;
    the OS places them wherever it likes, as it would a neighbour."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)   # running, not starting up, when the level starts
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench ARGS=...")
    parser.add_argument("--url", help="bench a running server instead of starting one")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="auto", help="shard --dtype (HF baseline: same, "
                        "auto means bfloat16 where the CPU has it)")
    parser.add_argument("--no-hf", action="store_true", help="skip the generate() baseline")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="shard --device, and where the generate() baseline runs")
    parser.add_argument("--shape", help="random weights in a named shape (smollm2-135m, "
                        "llama3.1-8b): the shard's --load-format dummy, same for generate()")
    parser.add_argument("--launcher-args", default="", help="extra flags for the launcher")
    parser.add_argument("--compare-url", help="another server to drive the same way, in the same run")
    parser.add_argument("--compare-api", default="llamacpp", choices=["llamacpp", "openai", "tgi"])
    parser.add_argument("--constrained", type=int, default=0, metavar="N",
                        help="also run each level with N of its streams held by a JSON Schema grammar")
    parser.add_argument("--contention", type=int, default=0, metavar="N",
                        help="also run each level (on both servers) with N busy loops beside them")
    return parser.parse_args(argv)


def start_stack(args: argparse.Namespace) -> tuple[Process, str]:
    port = free_port()
    model = ["--model-id", args.shape, "--load-format", "dummy"] if args.shape else []
    process = Process(["-m", "router.launcher", "--port", str(port), "--dtype", args.dtype,
                       "--device", args.device, *model, *args.launcher_args.split()],
                      __import__("pathlib").Path("/tmp/sluice-bench.log"))
    url = f"http://127.0.0.1:{port}"
    process.wait_for(lambda: http_ok(url + "/health"), 600, "launcher")
    return process, url


def measure(args: argparse.Namespace, url: str) -> dict[str, list[dict]]:
    """Interleaves the runs level by level, so drift on a shared machine hits them all."""
    runs = {key: [] for key in ("sluice", "fixed_length", "constrained", "other",
                                "contended", "other_contended")}

    def level(target: str, streams: int, **options) -> dict:
        return asyncio.run(run_level(target, streams, args.max_new_tokens, **options))

    for streams in args.concurrency:
        runs["sluice"].append(level(url, streams))
        for _ in range(2 if args.constrained else 0):   # twice, alternating: the spread shows drift
            runs["fixed_length"].append(level(url, streams, fixed_length=True))
            runs["constrained"].append(level(url, streams, num_constrained=min(args.constrained, streams)))
        if args.compare_url:
            runs["other"].append(level(args.compare_url, streams, api=args.compare_api))
        if args.contention:
            with busy_loops(args.contention):
                runs["contended"].append(level(url, streams))
                if args.compare_url:
                    runs["other_contended"].append(level(args.compare_url, streams, api=args.compare_api))
    return runs


def hf_baseline(args: argparse.Namespace) -> dict[int, float]:
    from shard.config import from_args
    from shard.loader import resolve
    from shard.runtime import _cpu_has_bf16

    bf16 = args.device == "cuda" or _cpu_has_bf16()
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if bf16 else "float32")
    source = resolve(args.shape, from_args([]).cache_dir, "dummy" if args.shape else "auto")
    return hf_generate(str(source.path), [c for c in args.concurrency if c <= 32],
                       args.max_new_tokens, dtype, args.device, dummy=bool(args.shape))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    process, url = start_stack(args) if args.url is None else (None, args.url)
    try:
        runs = measure(args, url)
    finally:
        if process is not None:
            process.stop()
    hf = {} if args.no_hf else hf_baseline(args)
    print_table(runs["sluice"], hf)
    if runs["constrained"]:
        print_constrained(runs["fixed_length"], runs["constrained"])
    if runs["other"]:
        print_ratios(runs["sluice"], runs["other"], args.compare_api)
    if runs["contended"]:
        print_contention(runs["sluice"], runs["contended"], args.contention)
    if runs["other_contended"]:
        print_contention(runs["other"], runs["other_contended"], args.contention, args.compare_api)
    print(json.dumps({**runs, "hf_generate_tok_s": hf}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
