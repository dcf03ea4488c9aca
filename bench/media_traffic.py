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
SLICES = 20
"""Sending slots per 20 ms; a slot sends 1/SLICES of the streams."""


@dataclass(frozen=True, slots=True)
class TrafficResult:
    sent: int
    received: int
    seconds: float
    cpu_seconds: float


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
    buffer = bytearray(2048)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    sent = received = 0

    # Each slot sends its share of streams, then the rest of the slot drains.
    slot_length = PACKET_INTERVAL / SLICES
    per_slot = -(-len(destinations) // SLICES)
    end = start_at + seconds
    slot = 0
    while True:
        deadline = start_at + slot * slot_length
        received += _drain_until(sock, poller, buffer, deadline)
        if deadline >= end:
            break
        tick, part = divmod(slot, SLICES)
        for index in range(part * per_slot, min((part + 1) * per_slot, len(packets))):
            packet = packets[index]
            struct.pack_into("!HI", packet, 2, tick & 0xFFFF, (tick * 160) & 0xFFFFFFFF)
            try:
                sock.sendto(packet, destinations[index])
                sent += 1
            except BlockingIOError:
                pass
        slot += 1

    # Let the last packets cross the relay.
    received += _drain_until(sock, poller, buffer, time.monotonic() + 0.5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    return TrafficResult(sent, received, seconds, cpu_seconds)


def _drain_until(
    sock: socket.socket, poller: select.poll, buffer: bytearray, deadline: float
) -> int:
    received = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return received
        if not poller.poll(remaining * 1000):
            continue
        for _ in range(256):
            try:
                sock.recv_into(buffer)
            except BlockingIOError:
                break
            received += 1


def _packet(ssrc: int) -> bytearray:
    header = struct.pack("!BBHII", 0x80, 0, 0, 0, ssrc)
    return bytearray(header + bytes([0xD5]) * (PACKET_SIZE - len(header)))
