"""Network namespaces and veth pairs for tests, always removed afterwards.

A ``Lab`` is two namespaces joined by one veth pair. Names carry the pid and
a counter so that two pytest-xdist workers never collide, and everything is
torn down in ``finally`` blocks: processes started through the lab are killed
first, then the namespaces are deleted (which also deletes the veth ends).
Only documentation prefixes (RFC 5737) and 10/8 are used, and only inside
the namespaces.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_counter = itertools.count()


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command and capture its output."""
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def unique_name(prefix: str) -> str:
    """A name short enough for an interface (15 characters) and unique."""
    return f"{prefix}{os.getpid() % 100000}{next(_counter)}"[:15]


@dataclass
class Namespace:
    name: str
    veth: str
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ip(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "-n", self.name, *argv, check=check)

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.name, *argv, check=check)

    def spawn(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace; the lab kills it on exit."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            start_new_session=True,
            **kwargs,
        )
        self.processes.append(process)
        return process

    def add_loopback_address(self, address: str) -> None:
        """A LAN-side address: no dummy links here, so a /32 on lo."""
        self.ip("addr", "add", f"{address}/32", "dev", "lo")


@dataclass
class Lab:
    a: Namespace
    b: Namespace


def stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@contextlib.contextmanager
def veth_lab(subnet: str = "192.0.2", prefix_length: int = 24) -> Iterator[Lab]:
    """Two namespaces A (``subnet``.1) and B (``subnet``.2) over one veth pair."""
    a = Namespace(unique_name("dpa"), unique_name("va"), f"{subnet}.1")
    b = Namespace(unique_name("dpb"), unique_name("vb"), f"{subnet}.2")
    created: list[Namespace] = []
    try:
        for namespace in (a, b):
            run("ip", "netns", "add", namespace.name)
            created.append(namespace)
            namespace.ip("link", "set", "lo", "up")
            # No IPv6 neighbour discovery chatter in the captures.
            for scope in ("all", "default"):
                namespace.exec("sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1")
        run("ip", "link", "add", a.veth, "netns", a.name, "type", "veth",
            "peer", "name", b.veth, "netns", b.name)  # fmt: skip
        for namespace in (a, b):
            namespace.ip(
                "addr", "add", f"{namespace.address}/{prefix_length}",
                "dev", namespace.veth,
            )  # fmt: skip
            namespace.ip("link", "set", namespace.veth, "up")
        _wait_for_carrier(a, b)
        yield Lab(a, b)
    finally:
        for namespace in created:
            for process in namespace.processes:
                stop(process)
        for namespace in created:
            run("ip", "netns", "delete", namespace.name, check=False)


def _wait_for_carrier(*namespaces: Namespace) -> None:
    # A new veth pair needs a moment before it passes traffic; poll its state
    # for at most two seconds rather than sleeping a fixed time.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        states = [
            namespace.ip("-o", "link", "show", namespace.veth).stdout
            for namespace in namespaces
        ]
        if all("LOWER_UP" in state for state in states):
            return
        time.sleep(0.02)


def wait_for(
    predicate: Callable[[], object], timeout: float, interval: float = 0.05
) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
