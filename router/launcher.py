"""`make run`: start the shard replicas, wait until each is ready, then start the router;
restart a shard that dies; stop everything cleanly on Ctrl-C / SIGTERM.

Flags are passed through: shard flags (--model-id, --dtype, --device, --max-batch-*)
go to every shard, router flags (--hostname, --port, --max-concurrent-requests, ...)
to the router, and the few both understand (--max-total-tokens) to both.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from router.config import flag_names as router_flag_names
from router.config import flag_value as router_flag_value
from router.config import build_parser as router_parser
from shard.config import build_parser as shard_parser

ROUTER_ONLY = {"--hostname", "--port", "--metrics-port"}
READY_MARK = "SHARD READY"


# What the launcher allows the router beyond its drain before killing it.
ROUTER_STOP_MARGIN_S = 5.0


@dataclass(frozen=True, slots=True)
class LaunchArgs:
    num_replicas: int
    shard_startup_timeout_s: float
    shard_args: tuple[str, ...]
    router_args: tuple[str, ...]

    @property
    def router_stop_timeout_s(self) -> float:
        """The router drains for its grace period; the shards must outlive that."""
        grace_s = router_flag_value("graceful_shutdown_timeout_s", self.router_args)
        return float(grace_s) + ROUTER_STOP_MARGIN_S


def parse(argv: list[str]) -> LaunchArgs:
    parser = argparse.ArgumentParser(prog="make run ARGS=...", add_help=False)
    parser.add_argument("--num-replicas", type=int,
                        default=int(os.environ.get("NUM_REPLICAS", "1")))
    parser.add_argument("--shard-startup-timeout-s", type=float, default=900.0)
    parser.add_argument("--num-shard", type=int, default=1)
    own, rest = parser.parse_known_args(argv)
    if own.num_replicas < 1:
        raise ValueError("--num-replicas must be >= 1")
    if own.num_shard != 1:
        raise ValueError("--num-shard (tensor parallel) > 1 is not supported yet; "
                         "use --num-replicas for data-parallel copies of the model")
    shard_flags = {s for a in shard_parser()._actions for s in a.option_strings}
    router_flags = router_flag_names() - {"--help"}
    shard_args, router_args = [], []
    for flag, value in _pairs(rest):
        known = False
        if flag in shard_flags and flag not in ROUTER_ONLY:
            shard_args += [flag, value]
            known = True
        if flag in router_flags and flag != "--model-id":
            router_args += [flag, value]
            known = True
        if not known:
            raise ValueError(f"unknown flag {flag}")
    return LaunchArgs(own.num_replicas, own.shard_startup_timeout_s, tuple(shard_args),
                      tuple(router_args))


def _pairs(argv: list[str]):
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r}")
        if "=" in token:
            flag, value = token.split("=", 1)
            i += 1
        elif i + 1 < len(argv):
            flag, value = token, argv[i + 1]
            i += 2
        else:
            raise ValueError(f"flag {token} needs a value")
        yield flag, value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def partition_cpus(cpus: set[int], num_replicas: int) -> list[frozenset[int] | None]:
    """One disjoint share of the launcher's CPUs per replica, so two replicas never take
    each other's cores; None (all of them, the shards' governors dividing them) where
    there are fewer CPUs than replicas, or one replica."""
    if num_replicas == 1 or len(cpus) < num_replicas:
        return [None] * num_replicas
    ordered, shares, start = sorted(cpus), [], 0
    for index in range(num_replicas):
        size = len(ordered) // num_replicas + (index < len(ordered) % num_replicas)
        shares.append(frozenset(ordered[start:start + size]))
        start += size
    return shares


class ShardProcess:
    """One shard process; echoes its output and notices when it is ready."""

    def __init__(self, index: int, port: int, args: tuple[str, ...],
                 cpus: frozenset[int] | None = None):
        self.index, self.port, self.args, self.cpus = index, port, args, cpus
        self.ready = threading.Event()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.ready.clear()
        cmd = [sys.executable, "-m", "shard", "--hostname", "127.0.0.1",
               "--port", str(self.port), *self.args]
        # Its own process group, so a Ctrl-C reaches the launcher only, which stops the
        # shards after the router has drained, not under the router's open streams.
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1, process_group=0)
        if self.cpus is not None:
            # Before the interpreter has imported torch: its threads, made later, inherit
            # the mask (a preexec_fn is unsafe beside the launcher's own threads).
            os.sched_setaffinity(self.process.pid, self.cpus)
        threading.Thread(target=self._echo, args=(self.process,), daemon=True).start()

    def _echo(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            if line.startswith(READY_MARK):
                self.ready.set()
            sys.stdout.write(f"[shard-{self.index}] {line}")
            sys.stdout.flush()

    def wait_ready(self, timeout_s: float, stopping: threading.Event) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready.wait(0.2):
            if stopping.is_set():  # Ctrl-C while loading: it no longer reaches the shard
                raise RuntimeError("stopped before the shards were ready")
            if self.process.poll() is not None:
                raise RuntimeError(f"shard-{self.index} exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"shard-{self.index} not ready after {timeout_s:.0f} s")

    @property
    def uri(self) -> str:
        return f"127.0.0.1:{self.port}"


def stop_process(process: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run(args: LaunchArgs) -> int:
    stopping = threading.Event()
    router_stop_timeout_s = args.router_stop_timeout_s
    # SIGHUP too: the shards' own process group keeps a closing terminal's from them.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stopping.set())
    shares = partition_cpus(os.sched_getaffinity(0), args.num_replicas)
    shards = [ShardProcess(i, free_port(), args.shard_args, shares[i]) for i in range(args.num_replicas)]
    router = None
    try:
        # The first shard converts the default model once; the others then find it cached.
        shards[0].start()
        shards[0].wait_ready(args.shard_startup_timeout_s, stopping)
        for shard in shards[1:]:
            shard.start()
        for shard in shards[1:]:
            shard.wait_ready(args.shard_startup_timeout_s, stopping)
        uris = [a for s in shards for a in ("--shard-uri", s.uri)]
        router = subprocess.Popen([sys.executable, "-m", "router", *uris, *args.router_args])
        return supervise(router, shards, stopping)
    except RuntimeError as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_process(router, router_stop_timeout_s)  # first: it drains its streams
        for shard in shards:
            stop_process(shard.process)


def supervise(router: subprocess.Popen, shards: list[ShardProcess], stopping: threading.Event) -> int:
    while not stopping.wait(0.5):
        if router.poll() is not None:
            return router.returncode
        for shard in shards:
            if shard.process.poll() is not None:
                print(f"launcher: shard-{shard.index} exited ({shard.process.returncode}); "
                      "restarting", file=sys.stderr)
                shard.start()
    return 0


def print_help() -> None:
    """The launcher's own flags, then every flag it passes on (to the router, the shards)."""
    print(f"usage: python -m router.launcher [flags]   (make run ARGS=\"...\")\n\n{__doc__.strip()}\n\n"
          "launcher flags:\n  --num-replicas N             full copies of the model, one shard process each "
          "[env NUM_REPLICAS; default 1]\n  --shard-startup-timeout-s S  how long each shard may take to "
          "load [default 900]\n  --num-shard N                tensor parallel shards (only 1)\n")
    for name, parser in (("router", router_parser({})), ("shard", shard_parser())):
        print(f"--- {name} flags ---")
        parser.print_help()
        print()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print_help()
        return 0
    try:
        args = parse(argv)
    except ValueError as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
