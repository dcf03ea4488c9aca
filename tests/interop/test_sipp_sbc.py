"""SIPp against a real ``sbc serve`` process on ephemeral loopback ports.

Each test starts the appliance, runs one SIPp scenario from ``scenarios/``
with a bounded call count and timeout, and reads SIPp's own statistics
(``-trace_stat``, ``-trace_counts``) and the appliance's counters, logged at
shutdown.
"""

from __future__ import annotations

import csv
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from peer_tools import require_tool
from sbc_process import SbcProcess

SCENARIOS = Path(__file__).with_name("scenarios")
SIPP_TIMEOUT = 60.0

TRANSPORTS = [pytest.param("u1", id="udp"), pytest.param("t1", id="tcp")]
FAMILIES = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    counts: dict[str, str]
    output: str


@pytest.fixture
def sipp():
    return require_tool("sipp", "sip-tester")


@pytest.fixture
def sbc(tmp_path):
    listen = []
    for transport in ("udp", "tcp"):
        listen += [
            "--listen",
            f"{transport}:127.0.0.1:0",
            "--listen",
            f"{transport}:[::1]:0",
        ]
    with SbcProcess(tmp_path / "sbc", *listen) as process:
        yield process


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host`` (SIPp binds both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def run_sipp(
    sipp: str,
    scenario: str,
    target: tuple[str, int],
    transport: str,
    calls: int,
    workdir: Path,
    *extra: str,
) -> SippResult:
    """Run one bounded SIPp client; SIGUSR1 then SIGKILL if it overstays."""
    workdir.mkdir(parents=True, exist_ok=True)
    host, port = target
    remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    stat_file = workdir / "stat.csv"
    argv = [
        sipp,
        "-sf", str(SCENARIOS / scenario),
        "-t", transport,
        "-i", host,
        "-p", str(free_port(host)),
        "-m", str(calls),
        "-r", "20",
        "-timeout", f"{SIPP_TIMEOUT / 2:.0f}s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat", "-stf", str(stat_file),
        "-trace_counts",
        "-trace_msg", "-message_file", str(workdir / "messages.log"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
        *extra,
        remote,
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = process.communicate(timeout=SIPP_TIMEOUT)
    finally:
        if process.poll() is None:
            # LAB-NOTES: -timeout does not always stop a stuck UAC; SIGUSR1 does.
            process.send_signal(signal.SIGUSR1)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
    return SippResult(
        process.returncode,
        *_calls_from_stat(stat_file),
        _last_counts(workdir),
        output,
    )


def _calls_from_stat(stat_file: Path) -> tuple[int, int]:
    """SuccessfulCall(C) and FailedCall(C): columns 16 and 18 of the last line."""
    rows = list(csv.reader(stat_file.open(), delimiter=";"))
    header, last = rows[0], rows[-1]
    assert header[15] == "SuccessfulCall(C)" and header[17] == "FailedCall(C)"
    return int(last[15]), int(last[17])


def _last_counts(workdir: Path) -> dict[str, str]:
    [counts_file] = workdir.glob("*_counts.csv")
    rows = list(csv.reader(counts_file.open(), delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False))


def describe(result: SippResult, workdir: Path) -> str:
    errors = workdir / "errors.log"
    return result.output[-2000:] + (
        errors.read_text()[-2000:] if errors.exists() else ""
    )


@pytest.mark.peer("sipp")
@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sipp_options_answered_200(sipp, sbc, tmp_path, transport, host):
    target = sbc.address("UDP" if transport == "u1" else "TCP", ipv6=":" in host)

    result = run_sipp(sipp, "options.xml", target, transport, 5, tmp_path / "sipp")

    assert (result.successful, result.failed) == (5, 0), describe(
        result, tmp_path / "sipp"
    )
    assert result.returncode == 0
    sbc.stop()
    assert sbc.counters("sip")["requests"] == 5


@pytest.mark.peer("sipp")
@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sipp_invite_answered_480_and_acked(sipp, sbc, tmp_path, transport, host):
    target = sbc.address("UDP" if transport == "u1" else "TCP", ipv6=":" in host)

    result = run_sipp(sipp, "invite_480.xml", target, transport, 5, tmp_path / "sipp")

    assert (result.successful, result.failed) == (5, 0), describe(
        result, tmp_path / "sipp"
    )
    assert int(result.counts["2_480_Recv"]) == 5
    sbc.stop()
    counters = sbc.counters("sip")
    assert counters["requests"] == 10  # five INVITEs and their five ACKs
    assert counters["acks_absorbed"] == 5


@pytest.mark.peer("sipp")
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sipp_invite_sent_twice_absorbed_by_transaction(sipp, sbc, tmp_path, transport):
    target = sbc.address("UDP" if transport == "u1" else "TCP")

    result = run_sipp(
        sipp, "invite_twice.xml", target, transport, 3, tmp_path / "sipp", "-nr"
    )

    # SIPp saw the 480 twice per call: once for each copy of the INVITE.
    assert (result.successful, result.failed) == (3, 0), describe(
        result, tmp_path / "sipp"
    )
    assert int(result.counts["2_480_Recv"]) == 3
    assert int(result.counts["4_480_Recv"]) == 3
    sbc.stop()
    counters = sbc.counters("sip")
    assert counters["retransmissions_absorbed"] == 3
    assert counters["acks_absorbed"] == 3
    # The core handled each INVITE once: one no-route decision per call.
    assert sbc.log_text().count("INVITE answered 480: no route") == 3


@pytest.mark.peer("sipp")
@pytest.mark.parametrize("host", FAMILIES)
def test_sipp_delayed_ack_sees_timer_g_retransmission(sipp, sbc, tmp_path, host):
    target = sbc.address("UDP", ipv6=":" in host)

    result = run_sipp(sipp, "ack_delayed.xml", target, "u1", 3, tmp_path / "sipp")

    # One resent 480 per call, at T1 = 0.5 s; none after the ACK at 1 s.
    assert (result.successful, result.failed) == (3, 0), describe(
        result, tmp_path / "sipp"
    )
    assert int(result.counts["2_480_Retrans"]) == 3
    sbc.stop()
    assert sbc.counters("sip")["acks_absorbed"] == 3
