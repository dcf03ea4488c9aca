"""Calls through a real ``sbc serve --config`` process, SIPp on both sides.

A SIPp UAC plays the PBX and one or two SIPp UAS play carriers. Each test
writes its own configuration (the single-node example's shape, on ports of
its own), runs the calls with every SIPp process bounded in time, then
stops the appliance and reads three independent records: SIPp's own
statistics and message traces on each side, and the appliance's CDR file.
"""

from __future__ import annotations

import csv
import fcntl
import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from peer_tools import require_tool
from sbc_process import SBC, SbcProcess

SCENARIOS = Path(__file__).with_name("scenarios")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "single-node.yaml"
RELIABLE_183 = REPO / "tests" / "b2bua" / "scenarios" / "uas_100rel.xml"
SIPP_TIMEOUT = 60.0
# The called number the PBX dials; the example's inbound rule makes it E.164.
DIALLED = "2125550100"
E164 = "+12125550100"

TRANSPORTS = [pytest.param("udp", id="udp"), pytest.param("tcp", id="tcp")]
FAMILIES = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]


# Ports and configuration


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
                return int(port)
    raise RuntimeError("no free port")


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Lab:
    """Where everything listens in one test.

    Over IPv4 the PBX and the carriers get loopback addresses of their own,
    so that hiding their addresses is checked too, not only their ports.
    """

    host: str
    """The SBC's address."""
    transport: str
    sbc_port: int
    """The SBC's port toward the PBX."""
    carrier_side_port: int
    caller_host: str
    caller_port: int
    callee_host: str
    callee_ports: list[int]
    caller_limits: dict[str, object] = field(default_factory=dict)

    @classmethod
    def create(cls, host: str, transport: str, callees: int = 1, **limits) -> Lab:
        caller_host, callee_host = (
            ("127.0.0.2", "127.0.0.3") if host == "127.0.0.1" else (host, host)
        )
        return cls(
            host,
            transport,
            free_port(host),
            free_port(host),
            caller_host,
            free_port(caller_host),
            callee_host,
            [free_port(callee_host) for _ in range(callees)],
            limits,
        )

    def config(self) -> dict:
        """The single-node example's shape: the PBX trunk, then carriers.

        The carriers' listeners come first in the file (a port of their
        own, or 0) and so give every Via and Contact; the PBX's INVITEs
        must still be classified by the listener they arrive on.
        """
        prefix = 128 if ":" in self.host else 32
        listeners = ["sbc-udp", "sbc-tcp"]
        carrier_listeners = ["carrier-udp", "carrier-tcp"]
        carriers = [f"carrier-{n}" for n in range(1, len(self.callee_ports) + 1)]
        pbx = {
            "name": "pbx",
            "kind": "pbx",
            "listeners": listeners,
            "targets": [self._target(self.caller_host, self.caller_port)],
            "inbound": {"allow": [f"{self.caller_host}/{prefix}"]},
            "numbers": {"inbound": [{"match": r"1?([2-9]\d{9})", "replace": r"+1\1"}]},
            "limits": self.caller_limits,
            "dial_plan": "from-pbx",
        }
        trunks = [pbx] + [
            {
                "name": name,
                "kind": "carrier",
                "listeners": carrier_listeners,
                "targets": [self._target(self.callee_host, port)],
            }
            for name, port in zip(carriers, self.callee_ports, strict=True)
        ]
        candidates = [
            {"trunk": name, "priority": rank}
            for rank, name in enumerate(carriers, start=1)
        ]
        return {
            "version": 1,
            "listeners": [
                {
                    "name": f"{side}-{t}",
                    "transport": t,
                    "address": self.host,
                    "port": port,
                }
                for side, port in (
                    ("carrier", self.carrier_side_port),
                    ("sbc", self.sbc_port),
                )
                for t in ("udp", "tcp")
            ],  # fmt: skip
            "trunks": trunks,
            "dial_plans": [
                {
                    "name": "from-pbx",
                    "routes": [{"prefix": "", "candidates": candidates}],
                }
            ],
        }

    def _target(self, host: str, port: int) -> dict:
        return {"host": host, "port": port, "transport": self.transport}


# SIPp


@dataclass
class SippRun:
    """One SIPp process: its arguments, and afterwards its results."""

    workdir: Path
    argv: list[str]
    process: subprocess.Popen | None = None
    output: str = ""

    @property
    def messages(self) -> str:
        path = self.workdir / "messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stat(self) -> tuple[int, int]:
        """SuccessfulCall(C) and FailedCall(C): columns 16 and 18, last line."""
        rows = list(csv.reader((self.workdir / "stat.csv").open(), delimiter=";"))
        header, last = rows[0], rows[-1]
        assert header[15] == "SuccessfulCall(C)" and header[17] == "FailedCall(C)"
        return int(last[15]), int(last[17])

    def describe(self) -> str:
        errors = self.workdir / "errors.log"
        text = errors.read_text(errors="replace") if errors.exists() else ""
        return self.output[-2000:] + text[-2000:]


def sipp_run(
    sipp: str,
    workdir: Path,
    role: tuple[str, ...],
    lab: Lab,
    address: tuple[str, int],
    *extra: str,
) -> SippRun:
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        sipp, *role,
        "-t", "u1" if lab.transport == "udp" else "t1",
        "-i", address[0],
        "-p", str(address[1]),
        "-timeout", f"{SIPP_TIMEOUT / 2:.0f}s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat", "-stf", str(workdir / "stat.csv"),
        "-trace_msg", "-message_file", str(workdir / "messages.log"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
        *extra,
    ]  # fmt: skip
    return SippRun(workdir, argv)


def start(run: SippRun) -> SippRun:
    run.process = subprocess.Popen(
        run.argv,
        cwd=run.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return run


def finish(run: SippRun, timeout: float = SIPP_TIMEOUT) -> int:
    """Wait for SIPp; SIGUSR1 then SIGKILL when it overstays (LAB-NOTES)."""
    process = run.process
    assert process is not None
    try:
        run.output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        try:
            run.output, _ = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            run.output, _ = process.communicate(timeout=5)
    return process.returncode


@dataclass
class CallResult:
    caller: SippRun
    callees: list[SippRun]
    caller_returncode: int
    records: list[dict]
    sbc_log: str


def place_calls(
    sipp: str,
    tmp_path: Path,
    lab: Lab,
    caller: tuple[str, ...],
    callees: list[tuple[str, ...]],
    calls: int,
    *,
    sbc_arguments: tuple[str, ...] = (),
    caller_extra: tuple[str, ...] = (),
    callee_calls: list[int] | None = None,
) -> CallResult:
    """Start the SBC and the carriers, run the PBX's calls, stop everything."""
    config_file = tmp_path / "sbc.yaml"
    config_file.write_text(yaml.safe_dump(lab.config(), sort_keys=False))
    expected = callee_calls if callee_calls is not None else [calls] * len(callees)
    with SbcProcess(
        tmp_path / "data", "--config", str(config_file), *sbc_arguments
    ) as sbc:
        uas_runs = [
            start(
                sipp_run(
                    sipp,
                    tmp_path / f"callee{n}",
                    role,
                    lab,
                    (lab.callee_host, port),
                    "-m",
                    str(count),
                )
            )
            for n, (role, port, count) in enumerate(
                zip(callees, lab.callee_ports, expected, strict=True)
            )
        ]
        try:
            uac = start(
                sipp_run(
                    sipp, tmp_path / "caller", caller, lab,
                    (lab.caller_host, lab.caller_port),
                    "-s", DIALLED, "-m", str(calls), *caller_extra,
                    host_port(*pbx_side(sbc, lab.transport)),
                )
            )  # fmt: skip
            returncode = finish(uac)
        finally:
            # A carrier that got all its calls has exited; others are stopped.
            for run in uas_runs:
                finish(run, timeout=5.0)
        sbc.stop()
        log = sbc.log_text()
    return CallResult(uac, uas_runs, returncode, read_records(tmp_path / "data"), log)


def pbx_side(sbc: SbcProcess, transport: str) -> tuple[str, int]:
    """The bound address of the PBX-side listener (the second of its transport)."""
    specs = [spec for spec in sbc.listening if spec.transport == transport.upper()]
    return specs[1].host, specs[1].port


def read_records(data_dir: Path) -> list[dict]:
    path = data_dir / "cdr.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def dispositions(result: CallResult) -> list[str]:
    return sorted(record["disposition"] for record in result.records)


# Topology hiding

_SECTION = re.compile(r"^-{20,} .*$", re.MULTILINE)
_CALL_ID = re.compile(r"^(?:Call-ID|i)\s*:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
_TAG = re.compile(r";\s*tag=([^;>,\s]+)", re.IGNORECASE)
_BRANCH = re.compile(r";\s*branch=([^;>,\s]+)", re.IGNORECASE)
_CONTACT = re.compile(r"^(?:Contact|m)\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def sent_headers(messages: str) -> list[str]:
    """Header blocks (bodies left out) of every message SIPp sent."""
    blocks = []
    for section in _SECTION.split(messages):
        first, _, message = section.strip().partition("\n")
        if " message sent" in first:
            blocks.append(message.strip().split("\n\n", 1)[0])
    return blocks


def all_headers(messages: str) -> str:
    parts = []
    for section in _SECTION.split(messages):
        _, _, message = section.strip().partition("\n")
        parts.append(message.strip().split("\n\n", 1)[0])
    return "\n".join(parts)


def identities(run: SippRun, host: str, port: int, sbc_host: str) -> set[str]:
    """What identifies this SIPp side in the headers it sent."""
    found = {host_port(host, port), f"rport={port}"}
    if host != sbc_host:
        found.add(host)
    for block in sent_headers(run.messages):
        found.update(_CALL_ID.findall(block))
        found.update(_TAG.findall(block))
        found.update(_BRANCH.findall(block))
        found.update(value.strip() for value in _CONTACT.findall(block))
    return found


def assert_hidden(
    source: SippRun, address: tuple[str, int], seen_by: SippRun, sbc_host: str
) -> None:
    own = identities(source, *address, sbc_host)
    assert len(own) > 4, "no messages traced"
    headers = all_headers(seen_by.messages)
    assert headers, "no messages traced on the other side"
    leaked = sorted(token for token in own if token in headers)
    assert not leaked, f"seen across the SBC: {leaked}"


def assert_hidden_both_ways(result: CallResult, lab: Lab) -> None:
    """Neither side's identities appear in what the other side saw."""
    for callee, port in zip(result.callees, lab.callee_ports, strict=True):
        caller_address = (lab.caller_host, lab.caller_port)
        assert_hidden(result.caller, caller_address, callee, lab.host)
        assert_hidden(callee, (lab.callee_host, port), result.caller, lab.host)


def sent_count(run: SippRun, start_line: str) -> int:
    return sum(block.startswith(start_line) for block in sent_headers(run.messages))


def received_count(run: SippRun, start_line: str) -> int:
    count = 0
    for section in _SECTION.split(run.messages):
        first, _, message = section.strip().partition("\n")
        if " message received" in first and message.strip().startswith(start_line):
            count += 1
    return count


@pytest.fixture
def sipp():
    return require_tool("sipp", "sip-tester")


# Calls


@pytest.mark.peer("sipp")
@pytest.mark.timeout(180)
@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_basic_call_caller_hangs_up_hidden_both_ways(sipp, tmp_path, transport, host):
    lab = Lab.create(host, transport)

    result = place_calls(
        sipp, tmp_path, lab, ("-sn", "uac"), [("-sn", "uas")], 5,
        caller_extra=("-r", "10", "-d", "200"),
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (5, 0)
    assert result.callees[0].stat() == (5, 0), result.callees[0].describe()
    assert dispositions(result) == ["answered"] * 5
    for record in result.records:
        assert record["hangup_side"] == "caller"
        assert (record["a_trunk"], record["b_trunk"]) == ("pbx", "carrier-1")
        assert (record["called_received"], record["called_sent"]) == (DIALLED, E164)
        assert record["answer_time"] >= record["start_time"] > 1e9  # Unix time
    assert_hidden_both_ways(result, lab)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_basic_call_callee_hangs_up_recorded_as_callee(sipp, tmp_path, transport):
    lab = Lab.create("127.0.0.1", transport)

    result = place_calls(
        sipp, tmp_path, lab,
        ("-sf", str(SCENARIOS / "b2bua_uac_callee_hangs_up.xml")),
        [("-sf", str(SCENARIOS / "b2bua_uas_hangs_up.xml"))],
        3, caller_extra=("-r", "10"),
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (3, 0)
    assert result.callees[0].stat() == (3, 0), result.callees[0].describe()
    assert dispositions(result) == ["answered"] * 3
    assert {r["hangup_side"] for r in result.records} == {"callee"}
    assert received_count(result.caller, "BYE ") >= 3
    assert_hidden_both_ways(result, lab)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancel_during_ringing_gets_487_and_cancels_the_carrier(
    sipp, tmp_path, transport, host
):
    lab = Lab.create(host, transport)

    result = place_calls(
        sipp, tmp_path, lab,
        ("-sf", str(SCENARIOS / "b2bua_uac_cancel.xml")),
        [("-sf", str(SCENARIOS / "b2bua_uas_rings.xml"))],
        3, caller_extra=("-r", "10"),
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (3, 0)
    assert result.callees[0].stat() == (3, 0), result.callees[0].describe()
    assert received_count(result.caller, "SIP/2.0 487") >= 3
    assert received_count(result.callees[0], "CANCEL ") >= 3
    assert dispositions(result) == ["cancelled"] * 3
    assert {r["final_status"] for r in result.records} == {487}
    assert_hidden_both_ways(result, lab)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_busy_carrier_486_relayed_to_the_pbx(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")

    result = place_calls(
        sipp, tmp_path, lab,
        ("-sf", str(SCENARIOS / "b2bua_uac_busy.xml")),
        [("-sf", str(SCENARIOS / "b2bua_uas_busy.xml"))],
        3, caller_extra=("-r", "10"),
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (3, 0)
    assert result.callees[0].stat() == (3, 0), result.callees[0].describe()
    assert dispositions(result) == ["busy"] * 3
    assert {r["final_status"] for r in result.records} == {486}
    assert_hidden_both_ways(result, lab)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_no_answer_timer_cancels_the_carrier_and_fails_the_call(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")

    # The carrier rings for ever; Timer C (1 s here) cancels it.
    result = place_calls(
        sipp, tmp_path, lab,
        ("-sf", str(SCENARIOS / "b2bua_uac_no_answer.xml")),
        [("-sf", str(SCENARIOS / "b2bua_uas_rings.xml"))],
        2, caller_extra=("-r", "10"),
        sbc_arguments=("--no-answer-timeout", "1"),
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (2, 0)
    assert result.callees[0].stat() == (2, 0), result.callees[0].describe()
    assert received_count(result.callees[0], "CANCEL ") >= 2
    assert dispositions(result) == ["no_answer"] * 2
    for record in result.records:
        assert record["hangup_side"] == "sbc"
        assert 1.0 <= record["end_time"] - record["start_time"] < 10.0


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_failover_from_503_carrier_to_the_second_carrier(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp", callees=2)

    result = place_calls(
        sipp, tmp_path, lab, ("-sn", "uac"),
        [("-sf", str(SCENARIOS / "b2bua_uas_unavailable.xml")), ("-sn", "uas")],
        4, caller_extra=("-r", "10", "-d", "100"),
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (4, 0)
    assert sent_count(result.callees[0], "SIP/2.0 503") == 4
    assert result.callees[1].stat() == (4, 0), result.callees[1].describe()
    assert received_count(result.caller, "SIP/2.0 503") == 0
    assert dispositions(result) == ["answered"] * 4
    assert {r["b_trunk"] for r in result.records} == {"carrier-2"}
    assert_hidden_both_ways(result, lab)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reinvite_hold_and_resume_relayed(sipp, tmp_path, transport):
    lab = Lab.create("127.0.0.1", transport)

    result = place_calls(
        sipp, tmp_path, lab,
        ("-sf", str(SCENARIOS / "b2bua_uac_hold.xml")),
        [("-sf", str(SCENARIOS / "b2bua_uas_hold.xml"))],
        2, caller_extra=("-r", "10"),
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (2, 0)
    callee = result.callees[0]
    assert callee.stat() == (2, 0), callee.describe()
    # Each call's carrier saw the hold offer and then the resume offer.
    assert callee.messages.count("a=sendonly") == 2
    assert result.caller.messages.count("a=recvonly") == 2
    assert dispositions(result) == ["answered"] * 2
    assert_hidden_both_ways(result, lab)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_reliable_183_from_the_carrier_is_pracked(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")

    result = place_calls(
        sipp, tmp_path, lab, ("-sn", "uac"), [("-sf", str(RELIABLE_183))],
        3, caller_extra=("-r", "10", "-d", "100"),
    )  # fmt: skip

    # The carrier's scenario answers only after the PRACK of its 183.
    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (3, 0)
    callee = result.callees[0]
    assert callee.stat() == (3, 0), callee.describe()
    assert received_count(callee, "PRACK ") == 3
    assert dispositions(result) == ["answered"] * 3
    assert_hidden_both_ways(result, lab)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_pbx_requiring_100rel_gets_a_reliable_180_and_its_prack_answered(
    sipp, tmp_path
):
    lab = Lab.create("127.0.0.1", "udp")

    result = place_calls(
        sipp, tmp_path, lab,
        ("-sf", str(SCENARIOS / "b2bua_uac_100rel.xml")),
        [("-sf", str(SCENARIOS / "b2bua_uas_ring_then_answer.xml"))],
        3, caller_extra=("-r", "10"),
    )  # fmt: skip

    # 100rel ends at the SBC (hop by hop): the carrier's plain 180 reaches
    # the PBX with Require: 100rel and an RSeq, and the PBX's PRACK gets 200.
    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (3, 0)
    callee = result.callees[0]
    assert callee.stat() == (3, 0), callee.describe()
    assert sent_count(result.caller, "PRACK ") == 3
    assert received_count(callee, "PRACK ") == 0
    assert "RSeq:" not in all_headers(callee.messages)
    assert dispositions(result) == ["answered"] * 3
    assert_hidden_both_ways(result, lab)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_config_listener_on_port_0_advertises_the_bound_port(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp")
    lab.sbc_port = lab.carrier_side_port = 0

    # Calls complete only if Via and Contact carry the port really bound:
    # the carrier answers and sends its BYE there.
    result = place_calls(
        sipp, tmp_path, lab,
        ("-sf", str(SCENARIOS / "b2bua_uac_callee_hangs_up.xml")),
        [("-sf", str(SCENARIOS / "b2bua_uas_hangs_up.xml"))],
        2, caller_extra=("-r", "10"),
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.callees[0].stat() == (2, 0), result.callees[0].describe()
    assert dispositions(result) == ["answered"] * 2
    assert ":0;" not in all_headers(result.callees[0].messages)


def test_serve_refuses_listen_together_with_config(tmp_path):
    config = tmp_path / "single-node.yaml"
    shutil.copyfile(EXAMPLE, config)

    result = subprocess.run(
        [str(SBC), "serve", "--config", str(config), "--listen", "udp:127.0.0.1:0",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    assert result.returncode == 2
    assert "--listen cannot be used with --config" in result.stderr


# Limits


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_concurrency_limit_gives_exactly_the_excess_503s(sipp, tmp_path):
    lab = Lab.create("127.0.0.1", "udp", max_calls=3)

    # Eight calls at once, each held 3 s: the fourth and later are refused.
    result = place_calls(
        sipp, tmp_path, lab,
        ("-sf", str(SCENARIOS / "b2bua_uac_limited.xml")), [("-sn", "uas")],
        8, caller_extra=("-r", "8", "-rp", "100", "-d", "3000"),
        callee_calls=[3],
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (8, 0)
    assert received_count(result.caller, "SIP/2.0 503") == 5
    assert received_count(result.callees[0], "INVITE ") == 3
    assert dispositions(result) == ["answered"] * 3 + ["rejected"] * 5
    refused = [r for r in result.records if r["disposition"] == "rejected"]
    assert {r["final_status"] for r in refused} == {503}
    assert_hidden_both_ways(result, lab)


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_cps_limit_gives_exactly_the_excess_503s(sipp, tmp_path):
    # One call per second with a burst of 3: ten calls within 100 ms find
    # three tokens, so seven 503s.
    lab = Lab.create("127.0.0.1", "udp", max_cps=1, burst=3)

    result = place_calls(
        sipp, tmp_path, lab,
        ("-sf", str(SCENARIOS / "b2bua_uac_limited.xml")), [("-sn", "uas")],
        10, caller_extra=("-r", "10", "-rp", "100", "-d", "100"),
        callee_calls=[3],
    )  # fmt: skip

    assert result.caller_returncode == 0, result.caller.describe()
    assert result.caller.stat() == (10, 0)
    assert received_count(result.caller, "SIP/2.0 503") == 7
    assert dispositions(result) == ["answered"] * 3 + ["rejected"] * 7
    assert_hidden_both_ways(result, lab)


# The README flow


@pytest.fixture
def example_ports() -> Iterator[None]:
    """The example's fixed ports, held by one test at a time across xdist workers."""
    with open(Path(tempfile.gettempdir()) / "sbc-example-ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_example(
    sipp: str, tmp_path: Path, uas_port: int, uac_port: int, sbc_port: int, called: str
) -> tuple[int, int, SippRun, list[dict]]:
    """The shipped example on its fixed ports: SIPp UAS and UAC around it."""
    for port in (5060, 5062, 5070, 5080):
        if not port_free("127.0.0.1", port):
            pytest.skip(f"127.0.0.1:{port} is in use by something else")
    config = tmp_path / "single-node.yaml"
    shutil.copyfile(EXAMPLE, config)
    for name in ("uas", "uac"):
        (tmp_path / name).mkdir()

    # The README's commands, plus what keeps SIPp non-interactive and bounded.
    bounded = ["-nostdin", "-timeout", "30s", "-timeout_error"]
    with SbcProcess(tmp_path / "data", "--config", str(config)) as sbc:
        uas = start(
            SippRun(
                tmp_path / "uas",
                [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port),
                 "-m", "5", *bounded],
            )
        )  # fmt: skip
        uac = start(
            SippRun(
                tmp_path / "uac",
                [sipp, "-sn", "uac", "-i", "127.0.0.1", "-p", str(uac_port),
                 "-s", called, "-m", "5", "-r", "5", "-d", "200", *bounded,
                 f"127.0.0.1:{sbc_port}"],
            )
        )  # fmt: skip
        uac_returncode = finish(uac)
        uas_returncode = finish(uas, timeout=10.0)
        sbc.stop()
    return uac_returncode, uas_returncode, uac, read_records(tmp_path / "data")


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_readme_flow_single_node_example_completes_calls(sipp, tmp_path, example_ports):
    """README "Placing calls": the PBX calls out through the carrier."""
    pbx_returncode, carrier_returncode, pbx, records = run_example(
        sipp, tmp_path, uas_port=5080, uac_port=5070, sbc_port=5060, called=DIALLED
    )

    assert pbx_returncode == 0, pbx.output[-2000:]
    assert carrier_returncode == 0
    assert [r["disposition"] for r in records] == ["answered"] * 5
    assert {(r["a_trunk"], r["b_trunk"]) for r in records} == {("pbx", "carrier")}
    assert {r["called_sent"] for r in records} == {E164}


@pytest.mark.peer("sipp")
@pytest.mark.timeout(120)
def test_example_carrier_call_reaches_the_pbx(sipp, tmp_path, example_ports):
    carrier_returncode, pbx_returncode, carrier, records = run_example(
        sipp, tmp_path, uas_port=5070, uac_port=5080, sbc_port=5062, called=E164
    )

    # The INVITE arrives on carrier-udp (5062): the carrier trunk, whose
    # dial plan sends it to the PBX, though the PBX trunk shares the source.
    assert carrier_returncode == 0, carrier.output[-2000:]
    assert pbx_returncode == 0
    assert [r["disposition"] for r in records] == ["answered"] * 5
    assert {(r["a_trunk"], r["b_trunk"]) for r in records} == {("carrier", "pbx")}


def port_free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True
