"""Reading RTP and RTCP headers in place (RFC 3550 §5.1, §6.4; RFC 5761 §4).

The relay forwards packets as the bytes it received. It reads the few header
fields it needs by offset and, when two legs number a codec differently,
rewrites the payload type byte of a copy; it never re-serializes a packet.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
RTCP_HEADER_SIZE = 8
DEFAULT_CLOCK_RATE = 8000

PayloadTypeMap = Mapping[str, int]
"""Encoding name with clock rate (and channels), as in a=rtpmap
(``"PCMU/8000"``, ``"telephone-event/8000"``), to the payload type a leg uses
for it (RFC 4566 §6)."""

Translation = bytes
"""128 bytes: the outgoing payload type for each incoming one."""


def is_rtcp_on_rtp_port(second_octet: int) -> bool:
    """RFC 5761 §4: with rtcp-mux, octet 1 in 192..223 marks RTCP (SR=200 ...)."""
    return 192 <= second_octet <= 223


def ssrc_of(packet: bytes) -> int:
    return int.from_bytes(packet[8:12], "big")


def payload_type_translation(
    source: PayloadTypeMap, destination: PayloadTypeMap
) -> Translation | None:
    """Map the sender's payload types to the receiver's, or None if equal.

    RFC 3264 §6.1: each side sends with the numbers its peer listed, so the
    relay renumbers per encoding (for example telephone-event 101 <-> 96,
    RFC 4733). Types without a match on the other side pass unchanged.
    """
    # Encoding names are case-insensitive (RFC 4566 §6 rtpmap).
    by_name = {encoding.lower(): pt for encoding, pt in destination.items()}
    table = bytearray(range(128))
    for encoding, payload_type in source.items():
        target = by_name.get(encoding.lower())
        if target is not None and 0 <= payload_type < 128 and 0 <= target < 128:
            table[payload_type] = target
    if table == bytes(range(128)):
        return None
    return bytes(table)


def clock_rates(payload_types: PayloadTypeMap) -> dict[int, int]:
    """RTP clock rate per payload type, from ``name/rate[/channels]`` keys."""
    rates: dict[int, int] = {}
    for encoding, payload_type in payload_types.items():
        parts = encoding.split("/")
        if len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) > 0:
            rates[payload_type] = int(parts[1])
    return rates


def clock_rate_table(rates: Mapping[int, int]) -> tuple[int, ...]:
    """The clock rate of each payload type 0..127, for lookup by index.

    Legs with the same rates share one table: it is a kilobyte, and most
    calls carry the same few codecs.
    """
    return _rate_table(tuple(sorted(rates.items())))


@lru_cache(maxsize=256)
def _rate_table(rates: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    by_type = dict(rates)
    return tuple(by_type.get(n, DEFAULT_CLOCK_RATE) for n in range(128))


def rewrite_payload_type(packet: bytes, translation: Translation) -> bytes:
    """The packet with its payload type renumbered; the same object if unchanged."""
    marker_and_type = packet[1]
    target = translation[marker_and_type & 0x7F]
    if target == marker_and_type & 0x7F:
        return packet
    copy = bytearray(packet)
    copy[1] = (marker_and_type & 0x80) | target
    return bytes(copy)
