"""SIPp as caller and as callee, the B2BUA engine between them on loopback.

The glue here is test-only and deliberately tiny (the real one is the
transport helper's `sbc serve`): one UDP socket, parse and validate, feed
the transaction layer, pump the engine, send, re-arm one timer.
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
from pathlib import Path

import pytest
from peer_tools import require_tool

from sbc.b2bua import B2bua, B2buaSettings
from sbc.cdr import CallRecord, Disposition
from sbc.config.model import Config
from sbc.sip.errors import SipParseError
from sbc.sip.message import Request
from sbc.sip.parser import parse_message, validate_request, validate_response
from sbc.sip.transaction import TransactionLayer

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).with_name("scenarios")
CALLS = 20
DEADLINE = 60.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def loopback_config(sbc_port: int, callee_port: int) -> Config:
    return Config.model_validate(
        {
            "listeners": [
                {"name": "lo", "transport": "udp", "address": HOST, "port": sbc_port}
            ],
            "trunks": [
                {
                    "name": "sipp-uac",
                    "kind": "carrier",
                    "listeners": ["lo"],
                    "targets": [{"host": HOST, "port": 5999}],
                    "inbound": {"allow": [HOST]},
                    "dial_plan": "plan",
                },
                {
                    "name": "sipp-uas",
                    "kind": "pbx",
                    "listeners": ["lo"],
                    "targets": [{"host": HOST, "port": callee_port}],
                },
            ],
            "dial_plans": [
                {
                    "name": "plan",
                    "routes": [
                        {"prefix": "1555", "candidates": [{"trunk": "sipp-uas"}]}
                    ],
                }
            ],
        }
    )


class Records:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def write(self, record: CallRecord) -> None:
        self.records.append(record)


class UdpGlue(asyncio.DatagramProtocol):
    def __init__(self, config: Config, records: Records) -> None:
        self.loop = asyncio.get_running_loop()
        self.layer = TransactionLayer()
        settings = B2buaSettings.from_config(config)
        self.engine = B2bua(self.layer, config, settings, random.Random(5), records)
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.sent_methods: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = self.loop.time()
        try:
            message = parse_message(data)
            if isinstance(message, Request):
                validate_request(message)
                self.layer.receive_request(message, addr[:2], "UDP", now)
            else:
                validate_response(message)
                self.layer.receive_response(message, addr[:2], "UDP", now)
        except SipParseError:
            return
        self.engine.pump(now)
        self.flush()

    def on_timer(self) -> None:
        now = self.loop.time()
        self.layer.handle_timer(now)
        self.engine.handle_timer(now)
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        for data, destination, _ in self.layer.datagrams_to_send():
            self.sent_methods.append(data[: data.index(b" ")])
            self.transport.sendto(data, destination)
        if self.timer is not None:
            self.timer.cancel()
        deadlines = [self.layer.next_timer(), self.engine.next_timer()]
        soonest = min((t for t in deadlines if t is not None), default=None)
        self.timer = (
            None if soonest is None else self.loop.call_at(soonest, self.on_timer)
        )


def sipp_argv(sipp: str, role: tuple[str, ...], port: int, *extra: str) -> list[str]:
    return [
        sipp, *role, "-i", HOST, "-p", str(port), "-nostdin",
        "-timeout", "40s", "-timeout_error", *extra,
    ]  # fmt: skip


async def run_calls(
    sipp: str, workdir: Path, callee_role: tuple[str, ...] = ("-sn", "uas")
) -> tuple[int, str, UdpGlue, Records]:
    sbc_port, callee_port, caller_port = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    )
    config = loopback_config(sbc_port, callee_port)
    records = Records()
    loop = asyncio.get_running_loop()
    _, glue = await loop.create_datagram_endpoint(
        lambda: UdpGlue(config, records), local_addr=(HOST, sbc_port)
    )
    callee = subprocess.Popen(
        sipp_argv(sipp, callee_role, callee_port),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        caller = await asyncio.create_subprocess_exec(
            *sipp_argv(
                sipp, ("-sn", "uac"), caller_port, "-s", "15550100", "-m", str(CALLS),
                "-r", "10", "-d", "200", f"{HOST}:{sbc_port}",
            ),
            cwd=workdir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(caller.communicate(), DEADLINE)
        except TimeoutError:
            caller.kill()
            output, _ = await caller.communicate()
        await asyncio.sleep(0.5)  # the last BYE's 200 from the callee
        return caller.returncode or 0, output.decode(errors="replace"), glue, records
    finally:
        callee.terminate()
        callee.wait(timeout=10)
        glue.transport.close()
        if glue.timer is not None:
            glue.timer.cancel()


@pytest.mark.timeout(120)
def test_sipp_calls_through_the_engine_all_succeed(tmp_path):
    sipp = require_tool("sipp", "sip-tester")

    returncode, output, glue, records = asyncio.run(run_calls(sipp, tmp_path))

    assert returncode == 0, output[-2000:]
    assert len(records.records) == CALLS
    assert {r.disposition for r in records.records} == {Disposition.ANSWERED}
    assert glue.engine.active_calls == 0


@pytest.mark.timeout(120)
def test_sipp_callee_with_reliable_183_is_pracked_by_the_engine(tmp_path):
    sipp = require_tool("sipp", "sip-tester")
    scenario = ("-sf", str(SCENARIOS / "uas_100rel.xml"))

    returncode, output, glue, records = asyncio.run(run_calls(sipp, tmp_path, scenario))

    # The callee's scenario fails unless each call's 183 is PRACKed before
    # it answers; the caller (SIPp's plain uac) must see every call through.
    assert returncode == 0, output[-2000:]
    assert glue.sent_methods.count(b"PRACK") == CALLS
    assert len(records.records) == CALLS
    assert {r.disposition for r in records.records} == {Disposition.ANSWERED}
    assert glue.engine.active_calls == 0
