"""A node on loopback with SIPp around it, for the node tests.

The node runs in the test's own event loop; SIPp runs as real processes
on ephemeral ports. Configurations are built as plain data and validated
by the real model, as the reconciler would hand them over.
"""

from __future__ import annotations

import asyncio
import copy
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbc.cdr import CallRecord
from sbc.config.model import Config
from sbc.io.settings import TransportSettings
from sbc.node import Node, NodeSettings

HOST = "127.0.0.1"
SIPP_DEADLINE = 60.0


def free_port() -> int:
    """A port free for both UDP and TCP (SIPp binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


class Records:
    """A call-record sink that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.closed = False

    def write(self, record: CallRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed = True


@dataclass
class Lab:
    """Ports of one test: the SBC's listener, the caller and the callee."""

    sbc_port: int = field(default_factory=free_port)
    caller_port: int = field(default_factory=free_port)
    callee_port: int = field(default_factory=free_port)

    def document(self) -> dict[str, Any]:
        """The caller's trunk routes every call to the callee's trunk."""
        return {
            "listeners": [
                {"name": "lo", "transport": "udp", "address": HOST, "port": self.sbc_port}
            ],
            "trunks": [
                {
                    "name": "caller",
                    "kind": "pbx",
                    "listeners": ["lo"],
                    "targets": [{"host": HOST, "port": self.caller_port}],
                    "inbound": {"allow": [f"{HOST}/32"]},
                    "dial_plan": "plan",
                },
                {
                    "name": "callee",
                    "kind": "carrier",
                    "listeners": ["lo"],
                    "targets": [{"host": HOST, "port": self.callee_port}],
                },
            ],
            "dial_plans": [
                {"name": "plan", "routes": [{"prefix": "", "candidates": [{"trunk": "callee"}]}]}
            ],
        }  # fmt: skip


def config_of(document: dict[str, Any]) -> Config:
    return Config.model_validate(copy.deepcopy(document))


def new_node(records: Records) -> Node:
    settings = NodeSettings(TransportSettings(listen=()))
    return Node(settings, records, close_cdr=records.close)


def sipp_argv(sipp: str, role: str, port: int, *extra: str) -> list[str]:
    return [
        sipp, "-sn", role, "-i", HOST, "-p", str(port), "-nostdin",
        "-timeout", "40s", "-timeout_error", *extra,
    ]  # fmt: skip


async def start_sipp(argv: list[str], workdir: Path) -> asyncio.subprocess.Process:
    workdir.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def start_call(
    sipp: str, lab: Lab, workdir: Path, hold_ms: int
) -> tuple[asyncio.subprocess.Process, asyncio.subprocess.Process]:
    """A SIPp UAS on the callee's port, then one call from a SIPp UAC that
    hangs up ``hold_ms`` after the answer; (callee, caller)."""
    callee = await start_sipp(
        sipp_argv(sipp, "uas", lab.callee_port, "-m", "1"), workdir / "uas"
    )
    caller = await start_sipp(
        sipp_argv(
            sipp, "uac", lab.caller_port, "-m", "1", "-d", str(hold_ms),
            "-s", "15550100", f"{HOST}:{lab.sbc_port}",
        ),
        workdir / "uac",
    )  # fmt: skip
    return callee, caller


async def finish_sipp(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """Wait for SIPp within the deadline (killed past it); code and output."""
    try:
        output, _ = await asyncio.wait_for(process.communicate(), SIPP_DEADLINE)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")[-3000:]


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def invite_status(port: int, call_id: str) -> int:
    """Send one INVITE to the SBC from loopback; the first final status."""
    return await request_status("INVITE", port, call_id)


async def request_status(method: str, port: int, call_id: str) -> int:
    """Send one request out of dialog to the SBC; the first final status."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.setblocking(False)
        local = sock.getsockname()[1]
        request = (
            f"{method} sip:15550100@{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local};rport;branch=z9hG4bK{call_id}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller@{HOST}>;tag=t{call_id}\r\n"
            f"To: <sip:15550100@{HOST}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
            f"Contact: <sip:caller@{HOST}:{local}>\r\nContent-Length: 0\r\n\r\n"
        )
        await loop.sock_sendto(sock, request.encode(), (HOST, port))
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 10)
            status = int(data.split(b" ", 2)[1])
            if status >= 200:
                break
        if method == "INVITE":
            # The ACK of a non-2xx final response ends the server transaction.
            ack = request.replace("INVITE sip", "ACK sip", 1)
            ack = ack.replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
            await loop.sock_sendto(sock, ack.encode(), (HOST, port))
        return status
