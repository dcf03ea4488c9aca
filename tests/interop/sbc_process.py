"""Run ``sbc serve`` as a real subprocess on ephemeral loopback ports.

The process logs ``listening on udp:127.0.0.1:40123`` for each listener; the
helper waits for those lines and the ``serving`` line, so tests learn the
ports without racing for them. The admin API listens on an ephemeral port
unless the test names ``--admin-listen``; its URL and the one-time admin
password printed at first start are kept. Stopping sends SIGTERM and waits;
a process that does not exit is killed, always.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sbc.io.settings import ListenSpec, parse_listen_spec

SBC = Path(sys.executable).with_name("sbc")
_LISTENING = re.compile(r"listening on ((?:udp|tcp|tls):\S+)")
_ADMIN_API = re.compile(r"admin API on (http://\S+)/api/v1/docs")
_PASSWORD = re.compile(r"one-time password .*: (\S+)$")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class SbcProcess:
    """One ``sbc serve`` child; use as a context manager."""

    def __init__(
        self, data_dir: Path, *arguments: str, start_timeout: float = START_TIMEOUT
    ) -> None:
        self.data_dir = data_dir
        self.arguments = arguments
        self.start_timeout = start_timeout
        self.listening: list[ListenSpec] = []
        self.admin_url: str | None = None
        """``http://127.0.0.1:PORT`` once the admin API listens."""
        self.admin_password: str | None = None
        """The one-time password of ``admin``, when this start created it."""
        self.lines: list[str] = []
        self.returncode: int | None = None
        self._process: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> SbcProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        argv = [str(SBC), "serve", "--data-dir", str(self.data_dir), *self.arguments]
        if "--admin-listen" not in self.arguments:
            argv += ["--admin-listen", "127.0.0.1:0"]
        self._process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.wait_for("serving", self.start_timeout)

    def wait_for(self, text: str, timeout: float) -> str:
        """The first stderr line containing ``text``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError(
                    f"sbc exited before {text!r}:\n" + "".join(self.lines)
                )
            match = _LISTENING.search(line)
            if match:
                self.listening.append(parse_listen_spec(match.group(1)))
            if found := _ADMIN_API.search(line):
                self.admin_url = found.group(1)
            if found := _PASSWORD.search(line.rstrip()):
                self.admin_password = found.group(1)
            if text in line:
                return line
        raise TimeoutError(
            f"no {text!r} from sbc within {timeout} s:\n" + "".join(self.lines)
        )

    def address(self, transport: str, ipv6: bool = False) -> tuple[str, int]:
        for spec in self.listening:
            if spec.transport == transport.upper() and (":" in spec.host) == ipv6:
                return spec.host, spec.port
        raise LookupError(f"sbc has no {transport} listener (ipv6={ipv6})")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it; kill it if it hangs."""
        process = self._process
        if process is None:
            return -1
        if process.poll() is None:
            process.send_signal(signum)
        try:
            self.returncode = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            self.returncode = process.wait(timeout=STOP_TIMEOUT)
        self._process = None
        return self.returncode

    def log_text(self) -> str:
        """What the process wrote to its log file in the data dir."""
        return (self.data_dir / "sbc.log").read_text(encoding="utf-8")

    def counters(self, group: str) -> dict[str, int]:
        """A counters line logged at shutdown, e.g. ``counters sip: a=1``."""
        match = re.search(rf"counters {group}: (.*)", self.log_text())
        if match is None:
            raise LookupError(f"no {group} counters in the log")
        return {
            key: int(value)
            for key, value in (item.split("=") for item in match.group(1).split())
        }

    def _read_stderr(self) -> None:
        process = self._process
        if process is None or process.stderr is None:
            return
        for line in process.stderr:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)
