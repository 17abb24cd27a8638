"""How many threads a shard computes with: the one owner of that choice (README, "CPU
threads").

At start, unless --num-threads is given: the CPUs this process may run on (its affinity
mask: taskset, a container's cpuset, the launcher's share among replicas), capped by the
cgroup CPU quota rounded down (a pod limited to 1.5 CPUs runs 1 thread, never all of the
host's cores).

While serving: once a second the governor reads how much CPU time other processes took
on those CPUs (the router, a neighbour, a hypervisor's steal). A parallel region ends only
when its last thread does, so a team with one thread descheduled by a neighbour waits for
that thread's next time slice at every layer; a team the size of the cores left runs at
their full speed instead. The team shrinks by the cores others keep busy and grows back
when they leave; --num-threads pins it.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
# /proc/stat's per-CPU fields that count as busy: user nice system idle iowait irq softirq steal.
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_cpu_limit(proc_cgroup: Path = Path("/proc/self/cgroup"),
                     root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time this process's cgroup (and every ancestor) allows; None: no limit."""
    limits = []
    for line in (_read(proc_cgroup) or "").splitlines():
        _, controllers, group = line.split(":", 2)
        if controllers == "":      # v2: cpu.max reads "<quota> <period>" or "max <period>"
            directory = root / group.lstrip("/")
            while True:
                fields = (_read(directory / "cpu.max") or "max").split()
                if fields[0] != "max":
                    limits.append(int(fields[0]) / int(fields[1]))
                if directory == root or root not in directory.parents:
                    break
                directory = directory.parent
        elif "cpu" in controllers.split(","):   # v1: quota -1 means none
            directory = root / controllers / group.lstrip("/")
            quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0:
                limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def usable_cpus(cpus: set[int] | None = None, limit: float | None = None) -> int:
    """The affinity mask's size, capped by the quota rounded down; at least 1."""
    count = len(cpus if cpus is not None else os.sched_getaffinity(0))
    if limit is not None:
        count = min(count, math.floor(limit))
    return max(1, count)


def cpu_times(cpus: set[int], proc_stat: Path = Path("/proc/stat")) -> tuple[int, int]:
    """(busy, total) clock ticks of `cpus` since boot."""
    busy = total = 0
    for line in (_read(proc_stat) or "").splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(f) for f in fields[:8]]
            busy += sum(ticks[i] for i in _BUSY_FIELDS)
            total += sum(ticks)
    return busy, total


def own_ticks(proc_self_stat: Path = Path("/proc/self/stat")) -> int:
    """This process's user + system clock ticks, all threads."""
    text = _read(proc_self_stat) or ""
    fields = text.rsplit(")", 1)[-1].split()
    return int(fields[11]) + int(fields[12]) if len(fields) > 12 else 0


def team_size(num_cpus: int, others_cpus: float) -> int:
    """The cores left once others' load is taken off, rounded to the nearest; at least 1."""
    return max(1, min(num_cpus, round(num_cpus - others_cpus)))


class ThreadGovernor:
    """Sizes the compute team. A monitor thread measures; the engine thread applies the
    size between steps (apply()), because OpenMP's team size belongs to the thread that
    starts the parallel regions."""

    def __init__(self, num_cpus: int, set_threads: Callable[[int], None],
                 pinned: int | None = None, interval_s: float = 1.0):
        self.num_cpus = num_cpus
        self.pinned = pinned
        self._set_threads = set_threads
        self._interval_s = interval_s
        self._cpus = os.sched_getaffinity(0)
        self.num_threads = pinned or num_cpus   # the size in force
        self._wanted = self.num_threads
        self._stopping = threading.Event()
        if pinned is None:
            threading.Thread(target=self._monitor, name="thread-governor", daemon=True).start()

    def apply(self) -> int:
        wanted = self._wanted
        if wanted != self.num_threads:
            log.info("compute threads %d -> %d (other processes' load on %d CPUs)",
                     self.num_threads, wanted, self.num_cpus)
            self._set_threads(wanted)
            self.num_threads = wanted
        return self.num_threads

    def stop(self) -> None:
        self._stopping.set()

    def _monitor(self) -> None:
        busy, total, own = *cpu_times(self._cpus), own_ticks()
        proposal = None
        while not self._stopping.wait(self._interval_s):
            now_busy, now_total, now_own = *cpu_times(self._cpus), own_ticks()
            elapsed = (now_total - total) / max(1, len(self._cpus))   # ticks per CPU
            if elapsed > 0:
                others = max(0, (now_busy - busy) - (now_own - own)) / elapsed
                size = team_size(self.num_cpus, others)
                # Two readings in a row: one burst (a compile, a GC) does not resize the team.
                if size == proposal:
                    self._wanted = size
                proposal = size
            busy, total, own = now_busy, now_total, now_own
