"""CPU per packet of the sans-IO media core alone, no sockets.

Run: ``.venv/bin/python bench/media_core.py`` (``--streams``, ``--rounds``,
``--repeat``). It sets up N connected streams and feeds each, round-robin,
one 172-byte RTP packet per round from its latched caller, as the relay's
glue would (the caller leg's ``rtp_received``): the figure is the core's
share of the per-packet cost, measured in this process with the best of
``--repeat`` runs. Set ``PYTHONPATH`` to
another checkout to compare two versions under the same machine load.
"""

from __future__ import annotations

import argparse
import functools
import platform
import struct
import time
from collections.abc import Callable
from typing import Any

from sbc.media import RemoteMedia, Side, StreamCore

CALLER_HOST = "192.0.2.10"
CALLEE_HOST = "198.51.100.20"
PAYLOAD = bytes(160)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()

    streams, sources = _connected_streams(options.streams)
    packets = [_rtp(seq) for seq in range(options.rounds)]
    best = min(
        _run(streams, sources, packets, first_now=repeat * 100.0)
        for repeat in range(options.repeat)
    )
    per_packet = best / (options.streams * options.rounds)
    print(
        f"{platform.machine()} python {platform.python_version()}: "
        f"{per_packet * 1e9:.0f} ns per packet "
        f"({options.streams} streams x {options.rounds} rounds, best of "
        f"{options.repeat})"
    )


def _connected_streams(count: int) -> tuple[list[StreamCore], list[tuple[str, int]]]:
    streams, sources = [], []
    for n in range(count):
        caller = (CALLER_HOST, 20000 + 2 * n)
        stream = StreamCore(0.0)
        stream.update_leg(Side.A, RemoteMedia(*caller, payload_types={"PCMU/8000": 0}))
        stream.update_leg(
            Side.B,
            RemoteMedia(CALLEE_HOST, 40000 + 2 * n, payload_types={"PCMU/8000": 0}),
        )
        streams.append(stream)
        sources.append(caller)
    return streams, sources


def _rtp(seq: int) -> bytes:
    # Version 2, PCMU, 20 ms of 8 kHz audio per packet.
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + PAYLOAD


def _run(
    streams: list[StreamCore],
    sources: list[tuple[str, int]],
    packets: list[bytes],
    first_now: float,
) -> float:
    receivers = [_receiver(stream) for stream in streams]
    pairs = list(zip(receivers, sources, strict=True))
    started = time.perf_counter()
    for round_number, packet in enumerate(packets):
        now = first_now + round_number * 0.02
        for receive, source in pairs:
            if receive(packet, source, now) is None:
                raise RuntimeError("the benchmark's packet was dropped")
    return time.perf_counter() - started


def _receiver(stream: StreamCore) -> Callable[[bytes, Any, float], object]:
    """What the relay's port calls per RTP packet on the caller's leg."""
    leg = stream.legs[Side.A]
    if hasattr(leg, "rtp_received"):
        return leg.rtp_received
    # A checkout from before the legs took packets themselves.
    return functools.partial(stream.rtp_received, int(Side.A))


if __name__ == "__main__":
    main()
