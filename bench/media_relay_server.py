"""This project's media relay as a benchmark subject, driven over stdin.

Commands, one JSON object per line; one JSON reply line each:
``{"allocate": N, "a": [host, port], "b": [host, port]}`` allocates N calls
whose A legs send to and hear from ``a`` and B legs ``b``, and replies with
``[[a_rtp_port, b_rtp_port], ...]``; ``{"counters": true}`` replies with the
summed packet and drop counts; ``{"quit": true}`` exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from typing import Any

import uvloop

from sbc.media import MediaRelay, MediaSettings, RemoteMedia, Side


async def serve(port_min: int, port_max: int) -> None:
    relay = MediaRelay(
        MediaSettings(port_min=port_min, port_max=port_max, media_timeout=3600.0)
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    _reply({"ready": os.getpid()})
    while line := await reader.readline():
        command = json.loads(line)
        if "quit" in command:
            break
        if "counters" in command:
            _reply(_counters(relay))
            continue
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
