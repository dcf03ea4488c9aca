"""Traffic for the ESP benchmarks: a paced generator and a counting sink.

Both run as separate processes (outside the measured one) and take one
command per stdin line, answering one line:

    python -m bench.esp_traffic sink HOST PORT
        count          -> datagrams received so far

    python -m bench.esp_traffic generate SOURCE DESTINATION PORT SIZE [ESP.json]
        run RATE SECONDS -> "SENT ELAPSED": datagrams sent and seconds taken

The generator sends SIZE-byte UDP payloads, in UDP GSO bursts of up to 64,
or, given an ESP config, pre-sealed ESP-in-UDP datagrams one per system call
(so the receiver's UDP GRO cannot coalesce what a network would not).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path

from ipsec.dataplane.packet import build_udp_packet
from ipsec.esp import Encryption, Integrity, Mode, OutboundSA, Protocol, SAConfig

UDP_SEGMENT = 103
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
BURST = 64
GSO_BYTES = 60000
BUFFER = 16 * 1024 * 1024


def big_buffers(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, BUFFER)


def sink(host: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    big_buffers(sock)
    sock.bind((host, port))
    received = [0]

    def count_forever() -> None:
        buffer = bytearray(65535)
        receive = sock.recv_into
        while True:
            receive(buffer)
            received[0] += 1

    threading.Thread(target=count_forever, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(received[0], flush=True)


class Generator:
    def __init__(self, source: str, destination: tuple[str, int], size: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big_buffers(self.sock)
        self.sock.bind((source, 0))
        self.destination = destination
        self.size = size

    def run(self, rate: float, seconds: float) -> tuple[int, float]:
        total = int(rate * seconds)
        payload = bytes(self.size)
        # One GSO send carries at most 64 KiB.
        per_send = max(1, min(BURST, GSO_BYTES // self.size))
        segment = [(socket.SOL_UDP, UDP_SEGMENT, self.size.to_bytes(2, "little"))]

        def send(count: int) -> None:
            for start in range(0, count, per_send):
                burst = [payload] * min(per_send, count - start)
                self.sock.sendmsg(burst, segment, 0, self.destination)

        return paced(total, rate, send)


class EspGenerator(Generator):
    """Pre-seals the datagrams of each run, then sends them one by one."""

    def __init__(
        self, source: str, destination: tuple[str, int], size: int, config: Path
    ) -> None:
        super().__init__(source, destination, size)
        raw = json.loads(config.read_text())
        encryption = Encryption[raw["encryption"]]
        self.sa = OutboundSA(
            SAConfig(
                spi=raw["spi"], protocol=Protocol.ESP, mode=Mode.TUNNEL,
                encryption=encryption, integrity=Integrity.NONE,
                encryption_key=bytes.fromhex(raw["key"]), integrity_key=b"",
                tunnel_source=ip_address(raw["outer_source"]),
                tunnel_destination=ip_address(raw["outer_destination"]),
            ),
            0.0,
        )  # fmt: skip
        self.inner = build_udp_packet(
            ip_address(raw["inner_source"]).packed,
            ip_address(raw["inner_destination"]).packed,
            raw["inner_source_port"], raw["inner_destination_port"],
            bytes(size),
        )  # fmt: skip

    def run(self, rate: float, seconds: float) -> tuple[int, float]:
        total = int(rate * seconds)
        sealed = [self.sa.seal(self.inner, 4, 0.0) for _ in range(total)]
        sendto, destination = self.sock.sendto, self.destination
        position = 0

        def send(count: int) -> None:
            nonlocal position
            for datagram in sealed[position : position + count]:
                sendto(datagram, destination)
            position += count

        return paced(total, rate, send)


def paced(total: int, rate: float, send: Callable[[int], None]) -> tuple[int, float]:
    """Send ``total`` datagrams at ``rate``, catching up in bursts of 64."""
    start = time.perf_counter()
    sent = 0
    while sent < total:
        elapsed = time.perf_counter() - start
        due = min(total, int(elapsed * rate) + 1)
        if due > sent:
            count = min(due - sent, BURST)
            try:
                send(count)
            except BlockingIOError:
                continue
            sent += count
        else:
            time.sleep(min(0.0005, (sent + 1) / rate - elapsed))
    return sent, time.perf_counter() - start


def generate(argv: list[str]) -> None:
    source, destination, port, size = argv[0], argv[1], int(argv[2]), int(argv[3])
    generator = (
        EspGenerator(source, (destination, port), size, Path(argv[4]))
        if len(argv) > 4
        else Generator(source, (destination, port), size)
    )
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "run":
            sent, elapsed = generator.run(float(words[1]), float(words[2]))
            print(f"{sent} {elapsed:.6f}", flush=True)


def main() -> None:
    if sys.argv[1] == "sink":
        sink(sys.argv[2], int(sys.argv[3]))
    else:
        generate(sys.argv[2:])


if __name__ == "__main__":
    main()
