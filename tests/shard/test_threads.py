"""The compute team's size: the CPUs a shard may use (affinity mask, cgroup quota) and the
governor that shrinks the team while other processes keep cores busy."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shard.threads import ThreadGovernor, cgroup_cpu_limit, team_size, usable_cpus
from tests.router.support import wait_until


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_cgroup_v2_quota_is_the_tightest_of_the_group_and_its_ancestors(tmp_path):
    root = tmp_path / "cgroup"
    write(tmp_path / "self-cgroup", "0::/kubepods/pod1/ctr\n")
    write(root / "cpu.max", "max 100000\n")
    write(root / "kubepods/pod1/cpu.max", "150000 100000\n")      # the pod: 1.5 CPUs
    write(root / "kubepods/pod1/ctr/cpu.max", "max 100000\n")
    limit = cgroup_cpu_limit(tmp_path / "self-cgroup", root)
    assert limit == 1.5
    assert usable_cpus(set(range(16)), limit) == 1     # not 16 threads for 1.5 CPUs


def test_a_cgroup_v1_quota_and_none(tmp_path):
    root = tmp_path / "cgroup"
    write(tmp_path / "self-cgroup", "4:cpu,cpuacct:/docker/abc\n2:memory:/docker/abc\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path / "self-cgroup", root) == 2.5
    assert usable_cpus({0, 1, 2, 3}, 2.5) == 2
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(tmp_path / "self-cgroup", root) is None
    assert usable_cpus({0, 1, 2, 3}, None) == 4
    assert usable_cpus({0, 1}, 0.5) == 1                 # a fraction of a CPU still runs one


def test_team_size_takes_off_the_cores_others_keep_busy():
    assert team_size(2, 0.2) == 2        # the router's share leaves the team whole
    assert team_size(2, 1.0) == 1        # one busy neighbour on two cores
    assert team_size(16, 3.8) == 12
    assert team_size(2, 5.0) == 1        # never below one


def test_the_governor_shrinks_while_a_neighbour_spins_and_grows_back():
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("a team of one cannot shrink")
    resized = []
    governor = ThreadGovernor(len(cpus), resized.append, interval_s=0.25)
    neighbours = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                  for _ in range(len(cpus) // 2)]
    try:
        assert wait_until(lambda: governor.apply() < len(cpus), timeout_s=10, interval_s=0.1)
        assert resized and resized[-1] == governor.num_threads >= 1
    finally:
        for neighbour in neighbours:
            neighbour.kill()
            neighbour.wait()
    try:
        assert wait_until(lambda: governor.apply() == len(cpus), timeout_s=10, interval_s=0.1)
        assert resized[-1] == len(cpus)
    finally:
        governor.stop()


def test_num_threads_pins_the_team():
    resized = []
    governor = ThreadGovernor(8, resized.append, pinned=3)
    assert governor.apply() == 3 and resized == []      # the caller set it at start


def test_the_launcher_splits_its_cpus_between_replicas():
    from router.launcher import partition_cpus

    assert partition_cpus({0, 1, 2, 3, 4}, 2) == [frozenset({0, 1, 2}), frozenset({3, 4})]
    assert partition_cpus({4, 6}, 2) == [frozenset({4}), frozenset({6})]
    assert partition_cpus({0, 1}, 3) == [None, None, None]    # fewer CPUs than replicas: shared
    assert partition_cpus({0, 1, 2, 3}, 1) == [None]
