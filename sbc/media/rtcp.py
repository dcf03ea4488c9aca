"""Reading receiver reports out of relayed RTCP (RFC 3550 §6.4).

aiortc parses the compound packet. Importing it loads PyAV and costs over a
second, so it never happens at start-up: the relay starts it in a worker
thread with its first call (``preload``), and the first RTCP packet imports
it if that has not finished, rather than stall every stream for a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ReceptionReport:
    """One report block: how a receiver saw the stream of ``ssrc``."""

    ssrc: int
    fraction_lost: float
    """Share of packets lost since the previous report (0.0 .. 1.0)."""
    packets_lost: int
    jitter: int
    """Interarrival jitter in RTP timestamp units."""


_parse: Callable[[bytes], list[Any]] | None = None


def read_reports(packet: bytes) -> list[ReceptionReport] | None:
    """Report blocks of every SR and RR in a compound packet; None if malformed."""
    parse = _parse or _load_parser()
    try:
        parts = parse(packet)
    except (ValueError, IndexError):
        return None
    reports: list[ReceptionReport] = []
    for part in parts:
        for block in getattr(part, "reports", ()):
            reports.append(
                ReceptionReport(
                    ssrc=block.ssrc,
                    fraction_lost=block.fraction_lost / 256,
                    packets_lost=block.packets_lost,
                    jitter=block.jitter,
                )
            )
    return reports


def preload() -> None:
    """Import the parser now; meant for a worker thread."""
    _load_parser()


def _load_parser() -> Callable[[bytes], list[Any]]:
    global _parse
    from aiortc.rtp import RtcpPacket

    _parse = RtcpPacket.parse
    return _parse
