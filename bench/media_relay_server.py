"""This project's media relay as a benchmark subject, driven over stdin.

Commands, one JSON object per line; one JSON reply line each:
``{"allocate": N, "a": [host, port], "b": [host, port]}`` allocates N calls
whose A legs send to and hear from ``a`` and B legs ``b``, and replies with
``[[a_rtp_port, b_rtp_port], ...]``; ``{"counters": true}`` replies with the
summed packet and drop counts; ``{"quit": true}`` exits. With MEDIA_BENCH_BARE=1 it serves the floor
instead: a uvloop forwarder that reads nothing, for comparison.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from typing import Any

import uvloop

from sbc.media import MediaRelay, MediaSettings, RemoteMedia, Side, rtcp


class _BareForwarder(asyncio.DatagramProtocol):
    """The floor: forward every datagram unread to one fixed address."""

    def __init__(self, destination: tuple[str, int]) -> None:
        self.destination = destination
        self.output: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.output is not None:
            self.output.sendto(data, self.destination)


async def _allocate_bare(
    command: dict[str, Any], next_port: list[int]
) -> list[list[int]]:
    loop = asyncio.get_running_loop()
    a, b = tuple(command["a"]), tuple(command["b"])
    ports = []
    for _ in range(command["allocate"]):
        a_port, b_port = next_port[0], next_port[0] + 2
        next_port[0] += 4
        to_b, to_a = _BareForwarder(b), _BareForwarder(a)
        a_side, _ = await loop.create_datagram_endpoint(
            lambda p=to_b: p, local_addr=(a[0], a_port)
        )
        b_side, _ = await loop.create_datagram_endpoint(
            lambda p=to_a: p, local_addr=(b[0], b_port)
        )
        to_b.output, to_a.output = b_side, a_side
        ports.append([a_port, b_port])
    return ports


async def serve(port_min: int, port_max: int) -> None:
    relay = MediaRelay(
        MediaSettings(port_min=port_min, port_max=port_max, media_timeout=3600.0)
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    # The relay imports aiortc in a thread with its first call; do it before
    # the baseline RSS, so neither the memory nor the CPU lands in a step.
    rtcp.preload()
    _reply({"ready": os.getpid()})
    bare = os.environ.get("MEDIA_BENCH_BARE") == "1"
    next_port = [port_min]
    while line := await reader.readline():
        command = json.loads(line)
        if "quit" in command:
            break
        if "counters" in command:
            _reply(_counters(relay))
        elif bare:
            _reply(await _allocate_bare(command, next_port))
        else:
            _reply(await _allocate(relay, command))
    await relay.close()


async def _allocate(relay: MediaRelay, command: dict[str, Any]) -> list[list[int]]:
    ports = []
    a_host, a_port = command["a"]
    b_host, b_port = command["b"]
    first = len(relay.sessions)
    for n in range(command["allocate"]):
        session = await relay.allocate(f"bench-{first + n}", a_host, b_host)
        session.update_leg(Side.A, RemoteMedia(a_host, a_port))
        session.update_leg(Side.B, RemoteMedia(b_host, b_port))
        ports.append([session.local(Side.A).rtp_port, session.local(Side.B).rtp_port])
    return ports


def _counters(relay: MediaRelay) -> dict[str, int]:
    total: Counter[str] = Counter()
    for session in relay.sessions.values():
        for numbers in session.snapshot().values():
            for key in ("packets_received", "packets_sent"):
                total[key] += int(numbers[key] or 0)
            for key, value in numbers.items():
                if key.startswith("drop."):
                    total[key] += int(value or 0)
    return dict(total)


def _reply(value: object) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
