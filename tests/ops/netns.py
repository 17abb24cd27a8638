"""Test hosts on this machine: each a network namespace joined to the root namespace by
its own veth pair, with a private /24 that exists only between the two ends. Made and
removed by the tests themselves (root only); `hosts()` removes everything it made, also
when the test fails, and ends the processes it started in them."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SUBNET_PREFIX = "10.213"


@dataclass(frozen=True, slots=True)
class Host:
    netns: str
    link: str        # the root namespace's end of the veth pair
    address: str     # the host's own address, inside its namespace

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]

    def cut(self) -> None:
        """Down the link like a pulled cable: no FIN, no RST ever reaches either end."""
        _ip("link", "set", self.link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.link, "up")


def available() -> str | None:
    """Why hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    return None


@contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    made: list[Host] = []
    try:
        subnets = _free_subnets()
        for index in range(count):
            made.append(_make(index, next(subnets)))
        yield made
    finally:
        for host in made:
            _remove(host)


def _make(index: int, third_octet: int) -> Host:
    tag = f"{os.getpid()}-{index}"
    host = Host(netns=f"sluice-test-{tag}", link=f"sl{os.getpid() % 100000}h{index}",
                address=f"{SUBNET_PREFIX}.{third_octet}.2")
    _ip("netns", "add", host.netns)
    try:
        _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _ip("addr", "add", f"{SUBNET_PREFIX}.{third_octet}.1/24", "dev", host.link)
        _ip("link", "set", host.link, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError:
        _remove(host)
        raise
    return host


def _remove(host: Host) -> None:
    # Only processes this test started live in its namespace; end them before it goes.
    pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout
    for pid in pids.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "link", "del", host.link], capture_output=True)  # takes its peer along
    subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)


def _free_subnets() -> Iterator[int]:
    """Third octets of 10.213.x.0/24 that no route uses yet (several test runs may share
    this machine), starting from one derived from our pid."""
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    start = os.getpid() % 250
    for offset in range(250):
        octet = (start + offset) % 250 + 1
        if f"{SUBNET_PREFIX}.{octet}." not in routes:
            yield octet


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)
