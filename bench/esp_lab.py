"""Two network namespaces joined by a veth pair, for the ESP benchmarks.

Namespace A (192.0.2.1, LAN 10.1.0.1 on lo) and B (192.0.2.2, LAN 10.2.0.1)
exist only for the run; every process started through :class:`Lab` is
stopped and both namespaces are deleted on exit, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPOSITORY = Path(__file__).resolve().parent.parent
OUTER_A, OUTER_B = "192.0.2.1", "192.0.2.2"
LAN_A, LAN_B = "10.1.0.1", "10.2.0.1"
SUBNET_A, SUBNET_B = "10.1.0.0/24", "10.2.0.0/24"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Helper:
    """A child process that answers one line per command line."""

    process: subprocess.Popen[str]

    def ask(self, command: str, timeout: float = 60.0) -> str:
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:
            raise RuntimeError("helper has no pipes")
        stdin.write(command + "\n")
        stdin.flush()
        return read_line(self.process, stdout, timeout)


def read_line(process: subprocess.Popen[str], stream: IO[str], timeout: float) -> str:
    """One line from a helper, or an error with its stderr if it died."""
    deadline = time.monotonic() + timeout
    os.set_blocking(stream.fileno(), False)
    buffer = ""
    while time.monotonic() < deadline:
        chunk = stream.readline()
        buffer += chunk or ""
        if buffer.endswith("\n"):
            return buffer.strip()
        if process.poll() is not None:
            error = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"helper {process.args!r} exited: {error}")
        time.sleep(0.002)
    raise TimeoutError(f"helper {process.args!r} silent for {timeout} s")


@dataclass
class Namespace:
    name: str
    veth: str
    outer: str
    lan: str
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def ip(self, *argv: str) -> None:
        run("ip", "-n", self.name, *argv)

    def spawn(
        self, argv: Sequence[str], cpu: int | None = None, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace, pinned to ``cpu`` if given."""
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *pin, *argv],
            start_new_session=True,
            cwd=REPOSITORY,
            **kwargs,
        )
        self.processes.append(process)
        return process

    def python(self, module: str, *argv: str, cpu: int | None = None) -> Helper:
        """A bench helper module run with this interpreter, speaking lines."""
        process = self.spawn(
            [sys.executable, "-m", module, *argv],
            cpu=cpu,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        helper = Helper(process)
        if process.stdout is None:
            raise RuntimeError("helper started without a stdout pipe")
        ready = read_line(process, process.stdout, 30.0)
        if ready != "ready":
            raise RuntimeError(f"{module} said {ready!r} instead of ready")
        return helper


def stop(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
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


def stop_all(namespace: Namespace) -> None:
    for process in namespace.processes:
        stop(process)
    namespace.processes.clear()


@dataclass
class Lab:
    a: Namespace
    b: Namespace

    def stop_processes(self) -> None:
        stop_all(self.a)
        stop_all(self.b)


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """Create namespaces A and B, the veth pair and the LAN addresses."""
    tag = f"{os.getpid() % 100000}"
    a = Namespace(f"espa{tag}", f"vea{tag}", OUTER_A, LAN_A)
    b = Namespace(f"espb{tag}", f"veb{tag}", OUTER_B, LAN_B)
    created: list[Namespace] = []
    try:
        for namespace in (a, b):
            run("ip", "netns", "add", namespace.name)
            created.append(namespace)
            namespace.ip("link", "set", "lo", "up")
            namespace.ip("addr", "add", f"{namespace.lan}/32", "dev", "lo")
        run("ip", "link", "add", a.veth, "netns", a.name, "type", "veth",
            "peer", "name", b.veth, "netns", b.name)  # fmt: skip
        for namespace in (a, b):
            namespace.ip("addr", "add", f"{namespace.outer}/24", "dev", namespace.veth)
            namespace.ip("link", "set", namespace.veth, "up")
        time.sleep(0.2)
        yield Lab(a, b)
    finally:
        for namespace in created:
            stop_all(namespace)
        for namespace in created:
            run("ip", "netns", "delete", namespace.name, check=False)
