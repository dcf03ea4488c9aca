"""Paced G.711-like RTP for the media relay benchmark, sent and counted.

One process stands in for every caller (or every callee): one UDP socket
sends 172-byte RTP (12-byte header, 160 bytes of payload) at 50 packets/s to
each relay port it is given, spread evenly over each 20 ms, and counts what
the relay delivers back to the same socket.
"""

from __future__ import annotations

import os
import resource
import select
import socket
import struct
import time
from dataclasses import dataclass

PACKET_SIZE = 172
PACKET_INTERVAL = 0.020
LATE_AFTER = 0.2
"""Seconds after which a packet would miss any jitter buffer: counted late."""
DRAIN = 3.0
"""Seconds to keep reading after the last send, so lag shows as late, not lost."""
SLICES = 20
"""Sending slots per 20 ms; a slot sends 1/SLICES of the streams."""


@dataclass(frozen=True, slots=True)
class TrafficResult:
    sent: int
    received: int
    late: int
    """Received more than LATE_AFTER seconds after it was sent."""
    delays: list[float]
    """One-way delay of every 16th packet received, in seconds."""
    seconds: float
    cpu_seconds: float


class _Receiver:
    """Counts arrivals; the sender's clock reading rides in the payload."""

    __slots__ = ("received", "late", "delays", "buffer")

    def __init__(self) -> None:
        self.received = 0
        self.late = 0
        self.delays: list[float] = []
        self.buffer = bytearray(2048)

    def drain_until(
        self, sock: socket.socket, poller: select.poll, deadline: float
    ) -> None:
        buffer = self.buffer
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if not poller.poll(remaining * 1000):
                continue
            for _ in range(256):
                try:
                    sock.recv_into(buffer)
                except BlockingIOError:
                    break
                delay = time.monotonic() - _SENT_AT.unpack_from(buffer, 12)[0]
                self.received += 1
                if delay > LATE_AFTER:
                    self.late += 1
                if not self.received & 15:
                    self.delays.append(delay)


_SENT_AT = struct.Struct("!d")


def run_traffic(
    sock: socket.socket,
    destinations: list[tuple[str, int]],
    start_at: float,
    seconds: float,
    cpu: int | None,
) -> TrafficResult:
    """Send to every destination until ``start_at + seconds``; count replies."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sock.setblocking(False)
    packets = [_packet(ssrc) for ssrc in range(1, len(destinations) + 1)]
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    receiver = _Receiver()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    sent = 0

    # Each slot sends its share of streams, then the rest of the slot drains.
    slot_length = PACKET_INTERVAL / SLICES
    per_slot = -(-len(destinations) // SLICES)
    end = start_at + seconds
    slot = 0
    while True:
        deadline = start_at + slot * slot_length
        receiver.drain_until(sock, poller, deadline)
        if deadline >= end:
            break
        tick, part = divmod(slot, SLICES)
        for index in range(part * per_slot, min((part + 1) * per_slot, len(packets))):
            packet = packets[index]
            struct.pack_into("!HI", packet, 2, tick & 0xFFFF, (tick * 160) & 0xFFFFFFFF)
            _SENT_AT.pack_into(packet, 12, time.monotonic())
            try:
                sock.sendto(packet, destinations[index])
                sent += 1
            except BlockingIOError:
                pass
        slot += 1

    # Let the last packets cross the relay.
    receiver.drain_until(sock, poller, time.monotonic() + DRAIN)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    return TrafficResult(
        sent,
        receiver.received,
        receiver.late,
        receiver.delays,
        seconds,
        cpu_seconds,
    )


def _packet(ssrc: int) -> bytearray:
    header = struct.pack("!BBHII", 0x80, 0, 0, 0, ssrc)
    return bytearray(header + bytes([0xD5]) * (PACKET_SIZE - len(header)))
