"""Trunk registration and OPTIONS keepalive in a real ``sbc serve --config``.

SIPp plays the registrar (it challenges with 401 and checks the digest
with its own code), the carriers and the PBX. Trunk state changes are read
from the appliance's log lines, calls' paths from its CDR file and from
each SIPp side's own statistics and traces.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from peer_tools import require_tool
from sbc_process import SbcProcess
from test_sipp_b2bua import (
    SippRun,
    finish,
    free_port,
    read_records,
    received_count,
    start,
)

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).with_name("scenarios")
REGISTRAR = Path(__file__).parents[1] / "b2bua" / "scenarios" / "registrar_401.xml"
AUTH = {"username": "sbc-line", "password": "reg-pw"}
SIPP_TIMEOUT = 30.0
# Pings every second; two misses take a target down, one answer brings it up.
KEEPALIVE = {"interval": 1, "down_threshold": 2, "up_threshold": 1}


@pytest.fixture
def sipp_binary():
    return require_tool("sipp", "sip-tester")


def run_sipp(binary: str, workdir: Path, transport: str, port: int, *extra: str):
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "-t", "u1" if transport == "udp" else "t1",
        "-i", HOST,
        "-p", str(port),
        "-timeout", f"{SIPP_TIMEOUT:.0f}s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat", "-stf", str(workdir / "stat.csv"),
        "-trace_msg", "-message_file", str(workdir / "messages.log"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
        *extra,
    ]  # fmt: skip
    return start(SippRun(workdir, argv))


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wait_for_log(sbc: SbcProcess, text: str, timeout: float) -> None:
    """Fail unless ``text`` shows up in the appliance's stderr in time."""
    if any(text in line for line in sbc.lines):
        return
    sbc.wait_for(text, timeout)


# Registration


def registration_config(registrar_port: int) -> dict:
    return {
        "version": 1,
        "listeners": [
            {"name": "lo-udp", "transport": "udp", "address": HOST, "port": 0}
        ],
        "trunks": [
            {
                "name": "carrier",
                "kind": "carrier",
                "listeners": ["lo-udp"],
                "targets": [{"host": HOST, "port": registrar_port}],
                "outbound_auth": AUTH,
                "registration": {"aor": "sip:sbc-line@sipp.example", "expires": 600},
            }
        ],
    }


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_registration_401_then_200_and_removal_at_sigterm(sipp_binary, tmp_path):
    registrar_port = free_port(HOST)
    config = write_config(tmp_path / "sbc.yaml", registration_config(registrar_port))
    registrar = run_sipp(
        sipp_binary, tmp_path / "registrar", "udp", registrar_port,
        "-sf", str(REGISTRAR), "-m", "1",
    )  # fmt: skip
    time.sleep(0.3)  # SIPp binds its port

    try:
        with SbcProcess(tmp_path / "data", "--config", str(config)) as sbc:
            wait_for_log(sbc, "trunk event: carrier registered", 15)
            # SIPp walks back to its first <recv> on its next tick; a removal
            # arriving before that would be "unexpected" to it.
            time.sleep(0.5)
            returncode = sbc.stop()
    finally:
        registrar_returncode = finish(registrar, timeout=20)
    log = sbc.log_text()

    # verifyauth accepted both digests, or SIPp would have failed its call.
    assert returncode == 0
    assert registrar_returncode == 0, registrar.describe()
    assert registrar.stat() == (1, 0)
    messages = registrar.messages
    assert received_count(registrar, "REGISTER ") == 4
    assert messages.count("Authorization: Digest") == 2
    assert "trunk event: carrier unregistered" in log
    assert "counters trunks: registered=1 registration_failed=0 unregistered=1" in log


# Keepalive and failover


def keepalive_config(lab: dict[str, int], carriers: list[str]) -> dict:
    """The PBX trunk, then carriers; only carrier-1 is pinged."""
    pbx = {
        "name": "pbx",
        "kind": "pbx",
        "listeners": ["pbx-tcp"],
        "targets": [{"host": HOST, "port": lab["pbx"], "transport": "tcp"}],
        "inbound": {"allow": [f"{HOST}/32"]},
        "dial_plan": "from-pbx",
    }
    trunks = [
        {
            "name": name,
            "kind": "carrier",
            "listeners": ["carrier-tcp"],
            "targets": [{"host": HOST, "port": lab[name], "transport": "tcp"}],
            **({"keepalive": KEEPALIVE} if name == "carrier-1" else {}),
        }
        for name in carriers
    ]
    return {
        "version": 1,
        "listeners": [
            {"name": "carrier-tcp", "transport": "tcp", "address": HOST, "port": 0},
            {"name": "pbx-tcp", "transport": "tcp", "address": HOST, "port": 0},
        ],
        "trunks": [pbx, *trunks],
        "dial_plans": [
            {
                "name": "from-pbx",
                "routes": [
                    {
                        "prefix": "",
                        "candidates": [
                            {"trunk": name, "priority": rank}
                            for rank, name in enumerate(carriers, start=1)
                        ],
                    }
                ],
            }
        ],
    }


def pbx_address(sbc: SbcProcess) -> str:
    spec = [s for s in sbc.listening if s.transport == "TCP"][1]
    return f"{spec.host}:{spec.port}"


def place_calls(
    sipp_binary: str, workdir: Path, sbc: SbcProcess, port: int, calls: int
) -> SippRun:
    caller = run_sipp(
        sipp_binary, workdir, "tcp", port,
        "-sn", "uac", "-s", "2125550100", "-m", str(calls), "-r", "10", "-d", "100",
        pbx_address(sbc),
    )  # fmt: skip
    finish(caller)
    return caller


def b_trunks(data_dir: Path, count: int, timeout: float = 5.0) -> list[str]:
    """The B-leg trunks of the call records, once ``count`` are written.

    The appliance writes a record off its event loop after the call's last
    response went out, so SIPp can finish a moment before the file has it.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(data_dir)
        if len(records) >= count or time.monotonic() > deadline:
            return [record["b_trunk"] for record in records]
        time.sleep(0.05)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(150)
def test_keepalive_trunk_down_fails_over_then_comes_back(sipp_binary, tmp_path):
    lab = {name: free_port(HOST) for name in ("pbx", "carrier-1", "carrier-2")}
    config = keepalive_config(lab, ["carrier-1", "carrier-2"])
    config_file = write_config(tmp_path / "sbc.yaml", config)
    data = tmp_path / "data"
    second = run_sipp(
        sipp_binary, tmp_path / "carrier-2", "tcp", lab["carrier-2"], "-sn", "uas"
    )
    first = None

    try:
        with SbcProcess(data, "--config", str(config_file)) as sbc:
            # Nothing listens on carrier-1's port: every ping is refused.
            wait_for_log(sbc, "trunk event: carrier-1 down", 20)
            before = place_calls(sipp_binary, tmp_path / "pbx-1", sbc, lab["pbx"], 3)
            routed_before = b_trunks(data, 3)

            first = run_sipp(
                sipp_binary, tmp_path / "carrier-1", "tcp", lab["carrier-1"],
                "-sf", str(SCENARIOS / "carrier_options_and_calls.xml"),
            )  # fmt: skip
            wait_for_log(sbc, "trunk event: carrier-1 up", 20)
            after = place_calls(sipp_binary, tmp_path / "pbx-2", sbc, lab["pbx"], 3)
            sbc.stop()
    finally:
        for run in (second, first):
            if run is not None:
                finish(run, timeout=2.0)
    log = sbc.log_text()

    assert before.stat() == (3, 0), before.describe()
    assert routed_before == ["carrier-2"] * 3
    assert after.stat() == (3, 0), after.describe()
    assert b_trunks(data, 6) == ["carrier-2"] * 3 + ["carrier-1"] * 3
    assert received_count(first, "OPTIONS ") >= 1
    assert received_count(second, "OPTIONS ") == 0
    assert "trunk_down=1" in log and "trunk_up=1" in log


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_keepalive_last_trunk_down_calls_get_480(sipp_binary, tmp_path):
    lab = {name: free_port(HOST) for name in ("pbx", "carrier-1")}
    config_file = write_config(
        tmp_path / "sbc.yaml", keepalive_config(lab, ["carrier-1"])
    )
    data = tmp_path / "data"

    with SbcProcess(data, "--config", str(config_file)) as sbc:
        wait_for_log(sbc, "trunk event: carrier-1 down", 20)
        caller = run_sipp(
            sipp_binary, tmp_path / "pbx", "tcp", lab["pbx"],
            "-sf", str(SCENARIOS / "invite_480.xml"), "-m", "2",
            pbx_address(sbc),
        )  # fmt: skip
        returncode = finish(caller)
        sbc.stop()

    assert returncode == 0, caller.describe()
    assert caller.stat() == (2, 0)
    assert received_count(caller, "SIP/2.0 480") == 2
    assert [r["final_status"] for r in read_records(data)] == [480, 480]
