"""The IKEv2 load generator of bench.ike_setup: our engine as many initiators.

Run by the benchmark inside namespace A, one command per stdin line:

    python -m bench.ike_load CONFIG.json
        run RATE SECONDS [hold] -> one JSON line: setups started, completed,
                            finished, failed, timed out, latencies and timing

The loop is sans-IO glue with no asyncio: setups start on an open-loop
schedule (setup i at i / RATE seconds), each is an :class:`IkeSa` initiator
with its own SPI, spread over a pool of UDP sockets (distinct source ports),
and every datagram the responder returns is handed to the engine its SPIi
names. Each initiator fakes a NAT (it hashes port 0 as its source, as
strongSwan's ``encap = yes`` does), so IKE_AUTH and everything after it go
to port 4500 behind the non-ESP marker, the only path kernel-libipsec
supports. Once IKE_AUTH is answered the setup counts as complete and the
initiator deletes the IKE_SA at once (INFORMATIONAL Delete), so the
responder holds only the IKE_SAs in flight; with ``hold`` it is left in
place instead (the generator forgets it) and the setup is finished there.
A setup that fails, or gets no IKE_AUTH or Delete answer within the
timeout, counts against the trial; the engine never retransmits within it.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Any

from ipsec.ike.config import Identity, IkeSaConfig
from ipsec.ike.connection import parse_proposal, traffic_selector
from ipsec.ike.constants import IdType, ProtocolId
from ipsec.ike.events import (
    ChildSaEstablished,
    ChildSaFailed,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
)
from ipsec.ike.ike_sa import IkeSa, IkeSaState
from ipsec.ike.keymat import PresharedKey
from ipsec.ike.payloads import TrafficSelector

NON_ESP_MARKER = bytes(4)
SO_RCVBUFFORCE = 33
BUFFER = 8 * 1024 * 1024
SOCKETS = 64


@dataclass
class Setup:
    """One IKE_SA being set up, then deleted or left in place."""

    engine: IkeSa
    sock: socket.socket
    started: float
    authenticated: float | None = None
    finished: bool = False
    """Deleted, or (holding) its CHILD_SA is up."""
    failed: str | None = None


@dataclass
class Tally:
    started: int = 0
    completed: int = 0
    finished: int = 0
    failed: int = 0
    timed_out: int = 0
    last_start: float = 0.0
    last_completion: float = 0.0

    def __post_init__(self) -> None:
        self.latencies: list[float] = []
        self.reasons: dict[str, int] = {}


class Generator:
    """Initiators on a socket pool in namespace A, aimed at one responder."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.responder = settings["responder"]
        self.local = settings["local"]
        self.timeout = float(settings["timeout"])
        self.base = base_config(settings)
        self.inner_network = int(IPv4Address(settings["inner_base"]))
        self.inner_size = int(settings["inner_size"])
        self.sockets = [self._open_socket() for _ in range(SOCKETS)]
        self.poll = select.epoll()
        self.by_fd = {sock.fileno(): sock for sock in self.sockets}
        for sock in self.sockets:
            self.poll.register(sock.fileno(), select.EPOLLIN)
        self.setups: dict[bytes, Setup] = {}
        self.counter = 0
        self.holding = False

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
        sock.bind((self.local, 0))
        sock.setblocking(False)
        return sock

    # -- one trial -------------------------------------------------------------

    def run(self, rate: float, seconds: float, hold: bool = False) -> Tally:
        """Start ``rate * seconds`` setups on schedule, then wait for them all;
        with ``hold``, leave them established instead of deleting them."""
        total = max(1, round(rate * seconds))
        tally = Tally()
        self.holding = hold
        in_flight: deque[Setup] = deque()
        began = time.monotonic()
        while tally.started < total or in_flight:
            now = time.monotonic()
            while tally.started < total and began + tally.started / rate <= now:
                in_flight.append(self._start(now))
                tally.started += 1
                tally.last_start = now
            self._expire(in_flight, now, tally)
            due = began + tally.started / rate if tally.started < total else now + 0.05
            wait = max(0.0, min(due - time.monotonic(), 0.05))
            for fd, _ in self.poll.poll(wait):
                self._drain(self.by_fd[fd], tally)
        tally.last_start -= began
        tally.last_completion = max(0.0, tally.last_completion - began)
        return tally

    def _start(self, now: float) -> Setup:
        self.counter += 1
        inner = IPv4Address(self.inner_network + self.counter % self.inner_size)
        config = replace(
            self.base, local_traffic_selectors=(TrafficSelector(inner, inner),)
        )
        engine = IkeSa(
            config,
            is_initiator=True,
            local_spi=os.urandom(8),
            random_bytes=os.urandom,
            local_endpoint=(ip_address(self.local), 0),
            remote_endpoint=(ip_address(self.responder), 500),
        )
        sock = self.sockets[self.counter % SOCKETS]
        setup = Setup(engine, sock, now)
        self.setups[engine.spi_i] = setup
        engine.initiate(now)
        self._flush(setup)
        setup.started = time.monotonic()  # latency runs from the send
        return setup

    def _drain(self, sock: socket.socket, tally: Tally) -> None:
        while True:
            try:
                data, source = sock.recvfrom(65535)
            except BlockingIOError:
                return
            if source[1] != 500:
                if data[:4] != NON_ESP_MARKER:
                    continue  # ESP: none is expected
                data = data[4:]
            setup = self.setups.get(data[:8])
            if setup is None:
                continue
            now = time.monotonic()
            setup.engine.receive_datagram(data, now)
            self._handle_events(setup, now, tally)
            self._flush(setup)

    def _handle_events(self, setup: Setup, now: float, tally: Tally) -> None:
        engine = setup.engine
        while (event := engine.next_event()) is not None:
            if isinstance(event, IkeSaEstablished):
                setup.authenticated = now
            elif isinstance(event, ChildSaEstablished):
                # The CHILD_SA, not just the IKE_SA, makes a setup complete.
                tally.completed += 1
                tally.latencies.append(now - setup.started)
                tally.last_completion = max(tally.last_completion, now)
                if self.holding:
                    setup.finished = True
                    tally.finished += 1
                else:
                    engine.delete(now)
            elif isinstance(event, IkeSaDeleted):
                setup.finished = True
                tally.finished += 1
            elif isinstance(event, IkeSaFailed | ChildSaFailed):
                setup.failed = event.reason

    def _flush(self, setup: Setup) -> None:
        engine = setup.engine
        floated = engine.state is not IkeSaState.IKE_SA_INIT_SENT
        port = 4500 if floated else 500
        for datagram in engine.datagrams_to_send():
            payload = NON_ESP_MARKER + datagram if floated else datagram
            try:
                setup.sock.sendto(payload, (self.responder, port))
            except OSError as error:
                setup.failed = f"send: {error}"

    def _expire(self, in_flight: deque[Setup], now: float, tally: Tally) -> None:
        """Retire finished setups and those past the timeout, oldest first."""
        while in_flight:
            setup = in_flight[0]
            finished = setup.finished or setup.failed is not None
            if not finished and now - setup.started < self.timeout:
                return
            in_flight.popleft()
            del self.setups[setup.engine.spi_i]
            if setup.failed is not None:
                tally.failed += 1
                tally.reasons[setup.failed] = tally.reasons.get(setup.failed, 0) + 1
            elif not setup.finished:
                tally.timed_out += 1
                stage = "IKE_AUTH" if setup.authenticated is None else "Delete"
                reason = f"no {stage} answer"
                tally.reasons[reason] = tally.reasons.get(reason, 0) + 1


def base_config(settings: dict[str, Any]) -> IkeSaConfig:
    """The initiators' settings; each setup replaces TSi with its own /32."""
    return IkeSaConfig(
        local_id=Identity(IdType.ID_FQDN, settings["initiator_id"].encode()),
        remote_id=Identity(IdType.ID_FQDN, settings["responder_id"].encode()),
        psk=PresharedKey(bytes.fromhex(settings["psk"])),
        ike_proposals=(parse_proposal(settings["ike_proposal"], ProtocolId.IKE),),
        esp_proposals=(parse_proposal(settings["esp_proposal"], ProtocolId.ESP),),
        local_traffic_selectors=(),
        remote_traffic_selectors=(traffic_selector(settings["responder_ts"]),),
        # The trial's timeout decides; a retransmission would blur latency.
        retransmit_timeout=float(settings["timeout"]) * 4,
        retransmit_tries=1,
        # Every initiator shares one identity: INITIAL_CONTACT would make
        # the responder drop all the others' IKE_SAs (RFC 7296 §2.4).
        send_initial_contact=False,
    )


def summary(tally: Tally, elapsed: float) -> dict[str, Any]:
    latencies = sorted(tally.latencies)
    return {
        "started": tally.started,
        "completed": tally.completed,
        "finished": tally.finished,
        "failed": tally.failed,
        "timed_out": tally.timed_out,
        "reasons": tally.reasons,
        "last_start": tally.last_start,
        "last_completion": tally.last_completion,
        "elapsed": elapsed,
        "median": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
    }


def percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    settings = json.loads(Path(sys.argv[1]).read_text())
    generator = Generator(settings)
    print("ready", flush=True)
    for line in sys.stdin:
        command, *arguments = line.split()
        if command == "run":
            rate, seconds = float(arguments[0]), float(arguments[1])
            started = time.monotonic()
            tally = generator.run(rate, seconds, hold="hold" in arguments[2:])
            print(json.dumps(summary(tally, time.monotonic() - started)), flush=True)
        else:
            print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)


if __name__ == "__main__":
    main()
