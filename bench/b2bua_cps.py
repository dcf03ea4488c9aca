"""Call rate through ``sbc serve`` against SIPp direct and Kamailio, and memory.

Run as ``.venv/bin/python -m bench.b2bua_cps [--quick]``. Three paths carry
the same calls (INVITE, 180, 200, ACK, BYE; UDP; signalling only) from a
SIPp UAC to a SIPp UAS: directly, through Kamailio as a stateful
record-routing proxy, and through ``sbc serve --config`` (one PBX trunk, one
carrier trunk, no limits). For each path the rate is doubled until a trial
falls short, then bisected, then confirmed by a longer trial; each trial
starts the middle process afresh. A rate is good only when every call
succeeded, at that rate, with almost no retransmission. CPU per call is the
middle box's own CPU time (utime + stime from /proc, children included) over
the confirming trial; for the sbc also that of its first thread alone, the
event loop (call records are written on threads of their own). Memory per established call: 10,000 calls held up (the UAC pauses
60 s before BYE) and the sbc's RSS before and at the plateau.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.b2bua_peers import (
    CALLEE_HOST,
    CALLER_HOST,
    DIALLED,
    PROXY_HOST,
    SippResult,
    cpu_seconds,
    free_port,
    rss_bytes,
    sipp_argv,
    sipp_result,
    start_kamailio,
    start_sbc,
    start_sipp,
    stop,
    stop_sipp,
    thread_cpu_seconds,
)

FIRST_RATE = 250
BISECT_STEPS = 4
CONFIRM_STEPS = 6
CEILING = 8000
"""The highest rate tried: SIPp itself runs out near 10,000 calls/s."""
HELD_CALLS = 10_000
HELD_RATE = 400
MIN_RATE_KEPT = 0.95
MAX_RETRANSMISSIONS = 0.01
"""Retransmissions allowed per call in a clean trial."""


@dataclass
class Path_:
    """One way from the UAC to the UAS, and the process in the middle."""

    name: str
    target: str
    """Where the UAC sends its calls."""
    callee_port: int
    start_middle: Callable[[Path], subprocess.Popen[bytes]] | None
    """Starts the proxy or B2BUA afresh for each trial (None: direct)."""
    ceiling: int


@dataclass
class Trial:
    rate: int
    calls: int
    result: SippResult
    seconds: float
    middle_cpu: float
    loop_cpu: float = 0.0
    """The middle's first thread only (sbc: the event loop)."""

    @property
    def clean(self) -> bool:
        """Every call succeeded, at the rate asked, without a backlog.

        SIPp retransmits after T1 (500 ms) and a late call still succeeds,
        so a middle box past its capacity shows first as retransmissions
        and as a rate SIPp could not keep: both disqualify the trial.
        """
        result = self.result
        return (
            result.returncode == 0
            and result.successful == self.calls
            and result.failed == 0
            and result.call_rate >= self.rate * MIN_RATE_KEPT
            and result.retransmissions <= self.calls * MAX_RETRANSMISSIONS
        )


def run_trial(path: Path_, workdir: Path, rate: int, seconds: float) -> Trial:
    """``rate`` calls/s for ``seconds`` through ``path``, all processes fresh.

    A fresh middle process per trial measures capacity, not what an earlier
    trial left behind (the sbc keeps ended calls for a while: see the soak
    test's KNOWN_LEAK).
    """
    middle = path.start_middle(workdir) if path.start_middle else None
    try:
        return _calls(path, workdir, rate, seconds, middle)
    finally:
        if middle is not None:
            stop(middle)


def _calls(
    path: Path_,
    workdir: Path,
    rate: int,
    seconds: float,
    middle: subprocess.Popen[bytes] | None,
) -> Trial:
    calls = max(200, int(rate * seconds))
    uas_dir, uac_dir = workdir / "uas", workdir / "uac"
    uas_argv = sipp_argv(uas_dir, CALLEE_HOST, path.callee_port, "-sn", "uas")
    uas = start_sipp(uas_argv, uas_dir)
    time.sleep(0.2)
    cpu_before = cpu_seconds(middle.pid) if middle is not None else 0.0
    loop_before = thread_cpu_seconds(middle.pid) if middle is not None else 0.0
    caller_port = free_port(CALLER_HOST)
    argv = sipp_argv(uac_dir, CALLER_HOST, caller_port, "-sn", "uac", "-s", DIALLED)
    argv += ["-r", str(rate), "-m", str(calls), "-l", str(max(1000, rate * 4))]
    argv += ["-timeout", f"{seconds + 20:.0f}s", path.target]
    started = time.monotonic()
    uac = start_sipp(argv, uac_dir)
    returncode = stop_sipp(uac, seconds + 25)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(middle.pid) - cpu_before if middle is not None else 0.0
    loop = thread_cpu_seconds(middle.pid) - loop_before if middle is not None else 0.0
    stop_sipp(uas, 0.1)
    return Trial(rate, calls, sipp_result(uac_dir, returncode), elapsed, cpu, loop)


def find_rate(
    path: Path_, workdir: Path, trial_seconds: float, confirm_seconds: float
) -> tuple[Trial | None, list[Trial]]:
    """Double until a loss, bisect, confirm; the confirming trial and all."""
    trials: list[Trial] = []
    counter = iter(range(1000))

    def trial(rate: int, seconds: float) -> Trial:
        done = run_trial(path, workdir / f"t{next(counter)}", rate, seconds)
        trials.append(done)
        verdict = "clean" if done.clean else "over"
        print(
            f"  {path.name:9} {rate:6d}/s {done.calls:6d} calls: "
            f"ok {done.result.successful} failed {done.result.failed} "
            f"retrans {done.result.retransmissions} "
            f"rate kept {done.result.call_rate:.0f}/s {verdict}",
            flush=True,
        )
        return done

    # Doubling, then bisection between the best clean and worst lost rate.
    good, bad = 0, 0
    rate = FIRST_RATE
    while rate <= path.ceiling:
        if not trial(rate, trial_seconds).clean:
            bad = rate
            break
        good, rate = rate, rate * 2
    if bad:
        for _ in range(BISECT_STEPS):
            middle = (good + bad) // 2
            if trial(middle, trial_seconds).clean:
                good = middle
            else:
                bad = middle

    # A longer trial confirms; on a loss, step down 10 % (at most halving).
    for _ in range(CONFIRM_STEPS):
        if good == 0:
            return None, trials
        confirming = trial(good, confirm_seconds)
        if confirming.clean:
            return confirming, trials
        good = int(good * 0.9)
    return None, trials


def rate_through(
    name: str, workdir: Path, trial_seconds: float, confirm_seconds: float
) -> Trial | None:
    """The confirmed rate through ``name`` (direct, kamailio or sbc)."""
    callee_port = free_port(CALLEE_HOST)
    if name == "direct":
        direct = Path_(name, f"{CALLEE_HOST}:{callee_port}", callee_port, None, CEILING)
        return find_rate(direct, workdir, trial_seconds, confirm_seconds)[0]
    port = free_port(PROXY_HOST)
    starter = start_kamailio if name == "kamailio" else start_sbc

    def start_middle(trial_dir: Path) -> subprocess.Popen[bytes]:
        return starter(trial_dir / name, port, callee_port)

    proxied = Path_(name, f"{PROXY_HOST}:{port}", callee_port, start_middle, CEILING)
    return find_rate(proxied, workdir, trial_seconds, confirm_seconds)[0]


# Memory per established call


def held_calls_memory(workdir: Path) -> tuple[int, int, int]:
    """The sbc's RSS before and with HELD_CALLS calls up; calls counted up.

    The UAC holds every call 60 s before BYE; calls are ramped at
    HELD_RATE, and the plateau is read once the UAS has answered them all.
    """
    port, callee_port = free_port(PROXY_HOST), free_port(CALLEE_HOST)
    sbc = start_sbc(workdir / "sbc", port, callee_port)
    uas_dir, uac_dir = workdir / "uas", workdir / "uac"
    uas = start_sipp(
        sipp_argv(uas_dir, CALLEE_HOST, callee_port, "-sn", "uas", "-fd", "1"),
        uas_dir,
    )
    try:
        time.sleep(0.5)
        before = rss_bytes(sbc.pid)
        caller_port = free_port(CALLER_HOST)
        argv = sipp_argv(uac_dir, CALLER_HOST, caller_port, "-sn", "uac", "-s", DIALLED)
        argv += ["-r", str(HELD_RATE), "-m", str(HELD_CALLS), "-d", "60000"]
        argv += ["-l", str(HELD_CALLS), "-fd", "1", f"{PROXY_HOST}:{port}"]
        uac = start_sipp(argv, uac_dir)
        answered = _wait_held(uas_dir, HELD_CALLS / HELD_RATE + 20)
        time.sleep(2.0)
        plateau = rss_bytes(sbc.pid)
        stop_sipp(uac, 0.1)
    finally:
        stop_sipp(uas, 0.1)
        stop(sbc)
    return before, plateau, answered


def _wait_held(uas_dir: Path, timeout: float) -> int:
    """Calls open at the UAS (CurrentCall), once all are up or at timeout."""
    deadline = time.monotonic() + timeout
    current = 0
    while time.monotonic() < deadline:
        current = _current_calls(uas_dir)
        if current >= HELD_CALLS:
            break
        time.sleep(0.5)
    return current


def _current_calls(workdir: Path) -> int:
    path = workdir / "stat.csv"
    if not path.exists():
        return 0
    rows = list(csv.reader(path.open(), delimiter=";"))
    if len(rows) < 2:
        return 0
    return int(dict(zip(rows[0], rows[-1], strict=False)).get("CurrentCall", 0))


# Report


def print_table(results: dict[str, Trial | None]) -> None:
    kamailio = results.get("kamailio")
    print(
        f"\n{'path':10} {'calls/s':>8} {'CPU µs/call':>12} {'first thread':>12}"
        f" {'vs kamailio':>12}"
    )
    for name, found in results.items():
        if found is None:
            print(f"{name:10} {'none':>8}")
            continue
        cpu = f"{found.middle_cpu / found.calls * 1e6:.0f}" if found.middle_cpu else "-"
        loop = f"{found.loop_cpu / found.calls * 1e6:.0f}" if found.loop_cpu else "-"
        ratio = f"{found.rate / kamailio.rate:.2f}" if kamailio else "-"
        # At the ceiling the figure is SIPp's, not the path's.
        rate = f"{'>=' if found.rate >= CEILING else ''}{found.rate}"
        print(f"{name:10} {rate:>8} {cpu:>12} {loop:>12} {ratio:>12}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short trials")
    parser.add_argument("--paths", default="direct,kamailio,sbc")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    trial_seconds, confirm_seconds = (2.0, 5.0) if args.quick else (4.0, 15.0)

    print(f"load average at start: {os.getloadavg()}", flush=True)
    results: dict[str, Trial | None] = {}
    with tempfile.TemporaryDirectory(prefix="b2bua_cps.") as tmp:
        root = Path(tmp)
        for name in args.paths.split(","):
            results[name] = rate_through(
                name, root / name, trial_seconds, confirm_seconds
            )
        print_table(results)
        sbc, kamailio = results.get("sbc"), results.get("kamailio")
        if sbc and kamailio:
            print(f"sbc/kamailio {sbc.rate / kamailio.rate:.2f} (target >= 0.5); "
                  f"sbc {sbc.rate}/s (target >= 500)")  # fmt: skip
        if not args.no_memory:
            before, plateau, held = held_calls_memory(root / "memory")
            print(
                f"\nsbc RSS {before / 2**20:.1f} MiB idle, {plateau / 2**20:.1f} MiB "
                f"with {held} calls up: {(plateau - before) / max(held, 1) / 1024:.1f}"
                " KiB per established call"
            )
    print(f"load average at end: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
