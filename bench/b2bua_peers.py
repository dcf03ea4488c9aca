"""Processes for the call-rate benchmark: SIPp ends, Kamailio and ``sbc serve``.

Each runs as a real child process on loopback. CPU time and resident memory
are read from /proc (the same kernel accounting rusage reports), summed over
a process and its descendants, since Kamailio forks its workers.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

SIPP = "/usr/bin/sipp"
KAMAILIO = "/usr/sbin/kamailio"
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
SBC = Path(sys.executable).with_name("sbc")
CALLER_HOST = "127.0.0.2"
CALLEE_HOST = "127.0.0.3"
PROXY_HOST = "127.0.0.1"
DIALLED = "2125550100"
# LAB-NOTES: above 2,000 calls/s the default socket buffers overflow.
SIPP_BUFFER = "4194304"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def free_port(host: str) -> int:
    """A UDP and TCP port free on ``host`` (SIPp binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


# /proc accounting


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.extend(descendants(int(child)))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of ``pid`` and its descendants."""
    total = 0
    for member in descendants(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields 14 and 15 of proc(5), counted after the command name.
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> float:
    """User plus system CPU of the first thread of ``pid`` (the event loop's
    in ``sbc serve``; the call-record writers run on threads of their own)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1]
    utime, stime = fields.split()[11:13]
    return (int(utime) + int(stime)) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for pid {pid}")


# SIPp


@dataclass
class SippResult:
    successful: int
    failed: int
    retransmissions: int
    call_rate: float
    """CallRate(C): calls started over the whole run, per second."""
    returncode: int


def sipp_argv(workdir: Path, host: str, port: int, *role: str) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return [
        SIPP, *role, "-t", "u1", "-i", host, "-p", str(port), "-nostdin",
        "-buff_size", SIPP_BUFFER, "-default_behaviors", "all,-abortunexp",
        "-trace_stat", "-stf", str(workdir / "stat.csv"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
    ]  # fmt: skip


def start_sipp(argv: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop_sipp(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for SIPp; SIGUSR1 then SIGKILL when it overstays (LAB-NOTES)."""
    for action in (None, signal.SIGUSR1, signal.SIGKILL):
        if action is not None and process.poll() is None:
            process.send_signal(action)
        try:
            return process.wait(timeout=timeout if action is None else 5.0)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


def sipp_result(workdir: Path, returncode: int) -> SippResult:
    """The cumulative counters on the last line of SIPp's statistics file."""
    path = workdir / "stat.csv"
    rows = list(csv.reader(path.open(), delimiter=";")) if path.exists() else []
    if len(rows) < 2:
        return SippResult(0, 0, 0, 0.0, returncode)
    row = dict(zip(rows[0], rows[-1], strict=False))
    return SippResult(
        int(row["SuccessfulCall(C)"]),
        int(row["FailedCall(C)"]),
        int(row["Retransmissions(C)"]),
        float(row["CallRate(C)"]),
        returncode,
    )


def sipp_successful(workdir: Path) -> int:
    """SuccessfulCall(C) so far; 0 before SIPp writes its first line."""
    try:
        return sipp_result(workdir, 0).successful
    except (KeyError, ValueError):
        return 0


# Kamailio


def kamailio_config(port: int, callee_port: int) -> str:
    """A stateful record-routing proxy that sends everything to the callee.

    SIPp's built-in UAC ignores Record-Route (LAB-NOTES), so in-dialog
    requests arrive with no Route header and are sent on all the same.
    """
    return f"""#!KAMAILIO
debug=0
log_stderror=yes
children=2
dns=no
rev_dns=no
maxbuffer=4194304
auto_aliases=no
listen=udp:{PROXY_HOST}:{port}
mpath="{KAMAILIO_MODULES}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "pv.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
    }}
    loose_route();
    $du = "sip:{CALLEE_HOST}:{callee_port}";
    if (!t_relay()) {{
        sl_reply_error();
    }}
}}
"""


def start_kamailio(
    workdir: Path, port: int, callee_port: int
) -> subprocess.Popen[bytes]:
    """Kamailio in the foreground with its workers; -m and -x per LAB-NOTES."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "kamailio.cfg"
    config.write_text(kamailio_config(port, callee_port))
    argv = [
        KAMAILIO, "-f", str(config), "-DD", "-E", "-m", "1024", "-x", "tlsf",
        "-Y", str(workdir), "-w", str(workdir), "-P", str(workdir / "pid"),
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=(workdir / "log").open("wb")
    )
    wait_for_port(process, port)
    return process


def wait_for_port(process: subprocess.Popen[bytes], port: int) -> None:
    """Until a UDP socket is bound to ``port`` (or the process died)."""
    deadline = time.monotonic() + START_TIMEOUT
    needle = f":{port:04X} "
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        if needle in Path("/proc/net/udp").read_text():
            time.sleep(0.3)
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on UDP port {port}")


# sbc serve


def sbc_config(
    pbx_port: int, carrier_side_port: int, callee_port: int
) -> dict[str, object]:
    """One PBX trunk (the caller), one carrier trunk (the callee), no limits."""
    return {
        "version": 1,
        "listeners": [
            {
                "name": "carrier-udp",
                "transport": "udp",
                "address": PROXY_HOST,
                "port": carrier_side_port,
            },
            {
                "name": "pbx-udp",
                "transport": "udp",
                "address": PROXY_HOST,
                "port": pbx_port,
            },
        ],  # fmt: skip
        "trunks": [
            {
                "name": "pbx",
                "kind": "pbx",
                "listeners": ["pbx-udp"],
                "targets": [{"host": CALLER_HOST, "port": 5060, "transport": "udp"}],
                "inbound": {"allow": [f"{CALLER_HOST}/32"]},
                "dial_plan": "from-pbx",
            },
            {
                "name": "carrier",
                "kind": "carrier",
                "listeners": ["carrier-udp"],
                "targets": [
                    {"host": CALLEE_HOST, "port": callee_port, "transport": "udp"}
                ],
            },
        ],
        "dial_plans": [
            {
                "name": "from-pbx",
                "routes": [
                    {"prefix": "", "candidates": [{"trunk": "carrier", "priority": 1}]}
                ],
            }
        ],
    }


def start_sbc(
    workdir: Path, pbx_port: int, callee_port: int
) -> subprocess.Popen[bytes]:
    """``sbc serve --config`` with its log in the data directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "sbc.yaml"
    config.write_text(
        yaml.safe_dump(sbc_config(pbx_port, free_port(PROXY_HOST), callee_port))
    )
    argv = [
        str(SBC), "serve", "--config", str(config), "--data-dir",
        str(workdir / "data"), "--admin-listen", "off",
    ]  # fmt: skip
    log = workdir / "stderr"
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.monotonic() + START_TIMEOUT
    while b" serving" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError("sbc serve did not start:\n" + log.read_text())
        time.sleep(0.05)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process does not exit."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)
