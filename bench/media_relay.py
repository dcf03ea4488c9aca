"""Relayed RTP packets per second at <= 0.1 % loss: this relay and rtpengine.

Run: ``.venv/bin/python bench/media_relay.py`` (as root, so rtpengine can
raise its file limit); ``--calls 400,800`` picks the steps, ``--seconds`` the
length of each; ``--relays ours,rtpengine,bare`` adds the floor, a uvloop
forwarder that does no per-packet work; ``compiled`` adds this relay with
its core compiled by mypyc (bench/media_compiled.py builds it in a scratch
copy first); ``--baseline DIR --relays ours,baseline`` adds this relay as
checked out in DIR (``git archive`` of an older commit), to compare two
versions under the same load. Needs rtpengine from Debian's rtpengine-daemon.

Each step sets up N calls on the relay under test (pinned to CPU 0), then two
traffic processes (pinned to CPU 1) play every caller and every callee: each
call carries 172-byte RTP at 50 packets/s in both directions, so N calls
offer 100 * N packets/s to the relay. Each packet carries its send time, so
loss counts what never arrived and what arrived over 200 ms late (no jitter
buffer would play it). The relay's CPU share comes from /proc, its memory
per call from the RSS
growth while the calls were set up. The two relays take turns at every step,
in the same run and under the same machine load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media_compiled import build_compiled  # noqa: E402
from media_rtpengine import NgClient, start_rtpengine  # noqa: E402
from media_traffic import run_traffic  # noqa: E402

RELAY_CPU = 0
TRAFFIC_CPU = 1
LOSS_LIMIT = 0.001
HOST = "127.0.0.1"
OURS_PORTS = (20000, 29999)
RTPENGINE_PORTS = (50000, 59999)
_THIS_CHECKOUT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", default="200,400,600,800,900,1000,1100,1200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--relays", default="ours,rtpengine")
    parser.add_argument(
        "--trials", type=int, default=2, help="per relay and step; the best counts"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--baseline", type=Path, help="checkout holding sbc/ for the baseline relay"
    )
    parser.add_argument(
        "--nice", type=int, default=-15, help="niceness of relays and traffic"
    )
    options = parser.parse_args()
    _raise_file_limit()
    # Relays, traffic processes and rtpengine inherit it: pinned to one CPU,
    # they must not share it evenly with whatever else the machine runs.
    os.nice(options.nice - os.nice(0))

    print(_machine())
    relays = options.relays.split(",")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        roots = _code_roots(relays, options.baseline, Path(scratch))
        for calls in (int(n) for n in options.calls.split(",")):
            # Relays alternate within a step, so all see the same machine load.
            for trial in range(options.trials):
                for relay in relays:
                    result = measure(relay, calls, options.seconds, roots.get(relay))
                    result["trial"] = trial
                    results.append(result)
                    print(_row(result), flush=True)
    print(_summary(results))
    if options.json:
        options.json.write_text(
            json.dumps({"machine": _machine(), "results": results}, indent=1)
        )


def measure(
    relay: str, calls: int, seconds: float, root: Path | None = None
) -> dict[str, Any]:
    """One step: set up ``calls`` calls, play the traffic, tear down.

    ``root`` holds the ``sbc/`` our relay runs from (this checkout if None).
    """
    load = os.getloadavg()
    caller, callee = _peer_socket(), _peer_socket()
    if relay == "rtpengine":
        process, allocate = _start_rtpengine()
    else:
        process, allocate = _start_ours(relay == "bare", root or _THIS_CHECKOUT)
    try:
        rss_before = _rss(process.pid)
        ports = allocate(calls, caller.getsockname(), callee.getsockname())
        rss_after = _rss(process.pid)
        traffic = _play(process.pid, caller, callee, ports, seconds)
        if process.stdin is not None:
            # Where the loss happened: before the relay read it, or after.
            _write_json(process, {"counters": True})
            traffic["relay_counters"] = _read_json(process)
    finally:
        _stop(process)
        caller.close()
        callee.close()
    return {
        "relay": relay,
        "calls": calls,
        "offered_pps": calls * 100,
        "load_before": [round(x, 2) for x in load],
        "memory_per_call_kib": round((rss_after - rss_before) / calls / 1024, 1),
        **traffic,
    }


def _play(
    relay_pid: int,
    caller: socket.socket,
    callee: socket.socket,
    ports: list[tuple[int, int]],
    seconds: float,
) -> dict[str, Any]:
    context = multiprocessing.get_context("fork")
    start_at = time.monotonic() + 0.5
    with context.Pool(2) as pool:
        cpu_before = _cpu_seconds(relay_pid)
        jobs = [
            pool.apply_async(
                run_traffic,
                (
                    sock,
                    [(HOST, p[side]) for p in ports],
                    start_at,
                    seconds,
                    TRAFFIC_CPU,
                ),
            )
            for side, sock in ((0, caller), (1, callee))
        ]
        results = [job.get(seconds + 30) for job in jobs]
        relay_cpu_seconds = _cpu_seconds(relay_pid) - cpu_before
        # Share of one CPU while traffic was offered (the drain adds little).
        relay_cpu = relay_cpu_seconds / seconds
    sent = sum(r.sent for r in results)
    received = sum(r.received for r in results)
    late = sum(r.late for r in results)
    delays = sorted(d for r in results for d in r.delays)
    return {
        "sent": sent,
        "received": received,
        "achieved_pps": round(sent / seconds),
        # Lost or too late for a jitter buffer; both fail the 0.1 % limit.
        "loss": (sent - received + late) / sent if sent else 1.0,
        "never_arrived": sent - received,
        "late": late,
        "delay_p99_ms": round(1000 * delays[int(0.99 * (len(delays) - 1))], 2)
        if delays
        else None,
        "delay_max_ms": round(1000 * delays[-1], 2) if delays else None,
        "relay_cpu": round(relay_cpu, 3),
        # CPU per relayed packet holds up better than loss on a loaded machine.
        "relay_us_per_packet": round(1e6 * relay_cpu_seconds / max(received, 1), 2),
        "traffic_cpu": round(sum(r.cpu_seconds for r in results) / seconds, 3),
    }


def _code_roots(
    relays: list[str], baseline: Path | None, scratch: Path
) -> dict[str, Path]:
    roots: dict[str, Path] = {}
    if "baseline" in relays:
        if baseline is None:
            raise SystemExit("--relays baseline needs --baseline DIR")
        roots["baseline"] = baseline.resolve()
    if "compiled" in relays:
        roots["compiled"] = build_compiled(_THIS_CHECKOUT, scratch)
    return roots


def _start_ours(bare: bool, root: Path) -> tuple[subprocess.Popen[bytes], Any]:
    server = Path(__file__).resolve().parent / "media_relay_server.py"
    process = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(RELAY_CPU),
            sys.executable,
            str(server),
            *map(str, OURS_PORTS),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={
            **os.environ,
            "PYTHONPATH": str(root),
            "MEDIA_BENCH_BARE": "1" if bare else "0",
        },
    )
    _read_json(process)

    def allocate(
        calls: int, a: tuple[str, int], b: tuple[str, int]
    ) -> list[tuple[int, int]]:
        _write_json(process, {"allocate": calls, "a": list(a), "b": list(b)})
        return [tuple(pair) for pair in _read_json(process)]

    return process, allocate


def _start_rtpengine() -> tuple[subprocess.Popen[bytes], Any]:
    process = start_rtpengine(*RTPENGINE_PORTS, cpu=RELAY_CPU)

    def allocate(
        calls: int, a: tuple[str, int], b: tuple[str, int]
    ) -> list[tuple[int, int]]:
        client = NgClient()
        try:
            return [client.call(f"bench-{n}", a, b) for n in range(calls)]
        finally:
            client.close()

    return process, allocate


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        try:
            _write_json(process, {"quit": True})
        except BrokenPipeError:
            pass
    else:
        process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _peer_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Bursts of replies from 1,000+ streams must not overflow the peer.
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, 16 * 1024 * 1024)  # SO_RCVBUFFORCE
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
    sock.bind((HOST, 0))
    return sock


def _read_json(process: subprocess.Popen[bytes]) -> Any:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("the relay under test exited")
    return json.loads(line)


def _write_json(process: subprocess.Popen[bytes], value: object) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(value).encode() + b"\n")
    process.stdin.flush()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    # utime and stime of the whole process (all threads), fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{platform.machine()}, {model}, {os.cpu_count()} CPUs, {now}"


def _row(result: dict[str, Any]) -> str:
    return (
        f"{result['relay']:>9} {result['calls']:>5} calls  offered {result['offered_pps']:>6} pps"
        f"  sent {result['achieved_pps']:>6} pps  loss {100 * result['loss']:7.3f} %"
        f" (lost {result['never_arrived']}, late {result['late']};"
        f" p99 {result['delay_p99_ms']} ms, max {result['delay_max_ms']} ms)"
        f"  relay CPU {100 * result['relay_cpu']:5.1f} %"
        f" ({result['relay_us_per_packet']:5.2f} us/packet)  traffic CPU"
        f" {100 * result['traffic_cpu']:5.1f} %  {result['memory_per_call_kib']:6.1f} KiB/call"
        f"  load {result['load_before'][0]}"
    )


def _summary(results: list[dict[str, Any]]) -> str:
    lines = ["best loss-free (<= 0.1 %) step per relay:"]
    for relay in dict.fromkeys(r["relay"] for r in results):
        clean = [r for r in results if r["relay"] == relay and r["loss"] <= LOSS_LIMIT]
        best = max(clean, key=lambda r: r["achieved_pps"], default=None)
        if best is None:
            lines.append(f"  {relay}: no step within the loss limit")
        else:
            lines.append(
                f"  {relay}: {best['calls']} calls, {best['achieved_pps']} packets/s"
                f" relayed, {best['relay_us_per_packet']} us CPU/packet,"
                f" {best['memory_per_call_kib']} KiB/call"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
