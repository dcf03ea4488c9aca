"""Soak: 14,000 calls through one ``sbc serve --config`` process, no leak.

A SIPp UAC (the PBX) places 14,000 short calls at a steady rate through the
appliance to a SIPp UAS (a carrier), over UDP on loopback. Three independent
records must agree that every call was answered: SIPp's statistics on both
sides and the appliance's CDR file. The appliance's own word on what is left
comes from what it logs at SIGTERM (calls still in progress, counters), and
its resident memory is read from /proc after a warm-up and at the end.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import yaml
from peer_tools import require_tool
from sbc_process import SbcProcess
from test_sipp_b2bua import (
    DIALLED,
    Lab,
    SippRun,
    finish,
    host_port,
    pbx_side,
    read_records,
    start,
)

CALLS = 14_000
RATE = 200
WARM_UP_CALLS = 10_000
CALL_SECONDS = 0.1
# An ended call stays findable for 64*T1 = 32 s (so a crossing BYE still gets
# 200), and its finished transactions wait out Timer J/K for as long
# (RFC 3261 §17, RFC 6026). At a steady rate that window holds a constant
# number of calls once it is full (measured: flat from about 45 s on), so the
# warm-up sample is taken after 50 s of calls and the last 4,000 calls may
# grow memory by at most 10 MB (about 2.6 KB each: allocator free lists and
# noise). A leak of whole calls (legs,
# dialogs, messages: tens of KB each) exceeds the bound several times over.
RSS_GROWTH_LIMIT = 10 * 1024 * 1024
RUN_TIMEOUT = CALLS / RATE + 30


def sipp_argv(sipp: str, workdir: Path, lab: Lab, address: tuple[str, int]) -> list:
    """SIPp over UDP with statistics only: a message trace would be 60 MB.

    When the shared machine stalls the appliance for over T1, it rightly
    retransmits an INVITE (Timer A) that the UAS already answered; SIPp's
    built-in UAS would abort such a call, so unexpected messages are
    ignored instead (the call must still complete to count as successful).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    return [
        sipp, "-t", "u1", "-i", address[0], "-p", str(address[1]),
        "-m", str(CALLS), "-nostdin", "-timeout", f"{RUN_TIMEOUT:.0f}s",
        "-timeout_error", "-default_behaviors", "all,-abortunexp",
        "-trace_stat", "-stf", str(workdir / "stat.csv"), "-fd", "1",
        "-trace_err", "-error_file", str(workdir / "errors.log"),
    ]  # fmt: skip


def successful_calls(run: SippRun) -> int:
    """SuccessfulCall(C) on the last line SIPp has written so far, else 0."""
    path = run.workdir / "stat.csv"
    if not path.exists():
        return 0
    rows = list(csv.reader(path.open(), delimiter=";"))
    if len(rows) < 2 or len(rows[-1]) < 16:
        return 0
    return int(rows[-1][15])


def wait_for_calls(run: SippRun, calls: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while successful_calls(run) < calls:
        assert run.process is not None and run.process.poll() is None, run.describe()
        assert time.monotonic() < deadline, f"{calls} calls not done in {timeout} s"
        time.sleep(0.2)


def sbc_pid(data_dir: Path) -> int:
    """The pid of the ``sbc serve`` whose command line names ``data_dir``."""
    wanted = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and wanted in argv:
            return int(entry.name)
    raise LookupError(f"no sbc serve process for {data_dir}")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for pid {pid}")


@pytest.fixture
def sipp():
    return require_tool("sipp", "sip-tester")


@pytest.mark.peer("sipp")
@pytest.mark.timeout(150)
def test_soak_14000_calls_all_answered_nothing_left(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")
    config_file = tmp_path / "sbc.yaml"
    config_file.write_text(yaml.safe_dump(lab.config(), sort_keys=False))
    data_dir = tmp_path / "data"

    with SbcProcess(data_dir, "--config", str(config_file)) as sbc:
        pid = sbc_pid(data_dir)
        callee = start(
            SippRun(
                tmp_path / "callee",
                sipp_argv(
                    sipp,
                    tmp_path / "callee",
                    lab,
                    (lab.callee_host, lab.callee_ports[0]),
                )
                + ["-sn", "uas"],
            )
        )
        caller = start(
            SippRun(
                tmp_path / "caller",
                sipp_argv(
                    sipp, tmp_path / "caller", lab, (lab.caller_host, lab.caller_port)
                )
                + ["-sn", "uac", "-s", DIALLED, "-r", str(RATE)]
                + ["-d", str(int(CALL_SECONDS * 1000))]
                + [host_port(*pbx_side(sbc, "udp"))],
            )
        )
        try:
            wait_for_calls(caller, WARM_UP_CALLS, WARM_UP_CALLS / RATE + 20)
            warm_rss = rss_bytes(pid)
        finally:
            caller_returncode = finish(caller, timeout=RUN_TIMEOUT)
            finish(callee, timeout=10.0)
        end_rss = rss_bytes(pid)
        sbc.stop()
        log = sbc.log_text()
    print(f"sbc RSS after {WARM_UP_CALLS} calls {warm_rss / 2**20:.1f} MiB, "
          f"after {CALLS} {end_rss / 2**20:.1f} MiB")  # fmt: skip

    # Every call answered, by SIPp's count on both sides and by the CDRs.
    assert caller_returncode == 0, caller.describe()
    assert caller.stat() == (CALLS, 0), caller.describe()
    assert callee.stat() == (CALLS, 0), callee.describe()
    records = read_records(data_dir)
    assert len(records) == CALLS
    assert {record["disposition"] for record in records} == {"answered"}
    assert len({record["call_id"] for record in records}) == CALLS

    # Nothing left: no call in progress at SIGTERM, no internal error, and
    # memory after the warm-up grew by less than the bound explained above.
    assert "calls in progress, left without a record: 0" in log
    assert sbc.counters("sip")["internal_errors"] == 0
    assert sbc.counters("sip")["open_connections"] == 0
    growth = end_rss - warm_rss
    per_call = growth / (CALLS - WARM_UP_CALLS)
    assert growth < RSS_GROWTH_LIMIT, f"{per_call / 1024:.1f} KiB kept per call"
