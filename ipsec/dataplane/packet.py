"""The IP and UDP headers the data paths build and read around ESP.

Addresses are kept packed (4 or 16 bytes) on the per-packet path: building
``ipaddress`` objects per packet would cost more than the AES-GCM itself.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_NONE = 59
IPPROTO_SCTP = 132

# Protocols whose first four payload bytes are source and destination port.
_PORTED = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, 136})
# IPv6 extension headers walked to find the upper-layer protocol (RFC 8200 §4).
_IPV6_EXTENSIONS = frozenset({0, 43, 60})
_IPV6_FRAGMENT = 44
_MAX_EXTENSIONS = 8

_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
_UDP_HEADER = struct.Struct("!HHHH")
_PORTS = struct.Struct("!HH")
_IPV6_PSEUDO_TAIL = struct.Struct("!IxxxB")
_IPV4_UDP_HEADERS = struct.Struct("!BBHHHBBH4s4sHHHH")
_DONT_FRAGMENT = 0x4000
DEFAULT_TTL = 64
# The IPv4 header words that never change here: version/IHL, DF, TTL/protocol.
_IPV4_FIXED_SUM = 0x4500 + _DONT_FRAGMENT + (DEFAULT_TTL << 8 | IPPROTO_UDP)


class Flow(NamedTuple):
    """The fields of an IP packet that traffic selectors match on."""

    version: int
    protocol: int
    source: bytes
    destination: bytes
    source_port: int
    destination_port: int
    payload_offset: int
    """Where the upper-layer header starts (after IP and extension headers)."""


def ones_complement_sum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit one's complement sum of RFC 1071, without the final NOT.

    The sum of big-endian 16-bit words modulo 0xFFFF equals the whole buffer
    read as one big-endian integer modulo 0xFFFF (2**16 = 1 mod 0xFFFF), which
    CPython computes in C; an all-zero sum stays 0, any other multiple of
    0xFFFF is the one's complement "negative zero" 0xFFFF.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    remainder = value % 0xFFFF
    return 0xFFFF if remainder == 0 and value else remainder


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The RFC 1071 checksum of ``data``."""
    return ~ones_complement_sum(data) & 0xFFFF


def udp_checksum(source: bytes, destination: bytes, segment: bytes) -> int:
    """The UDP checksum over the pseudo header (RFC 768; RFC 8200 §8.1).

    ``segment`` is the UDP header (checksum field zero) and payload. A result
    of zero is sent as 0xFFFF, since zero means "no checksum" over IPv4 and is
    not allowed over IPv6.
    """
    length = len(segment)
    if len(source) == 4:
        pseudo = source + destination + _PORTS.pack(IPPROTO_UDP, length)
    else:
        pseudo = source + destination + _IPV6_PSEUDO_TAIL.pack(length, IPPROTO_UDP)

    # Add the two partial sums with the end-around carry of RFC 1071.
    total = ones_complement_sum(pseudo) + ones_complement_sum(segment)
    if total > 0xFFFF:
        total -= 0xFFFF
    checksum = ~total & 0xFFFF
    return checksum or 0xFFFF


def build_udp(
    source: bytes, destination: bytes, source_port: int, destination_port: int,
    payload: bytes,
) -> bytes:  # fmt: skip
    """A UDP header and payload whose checksum covers ``source``/``destination``."""
    length = 8 + len(payload)
    header = _UDP_HEADER.pack(source_port, destination_port, length, 0)
    checksum = udp_checksum(source, destination, header + payload)
    return _UDP_HEADER.pack(source_port, destination_port, length, checksum) + payload


def build_ip(
    source: bytes, destination: bytes, protocol: int, payload: bytes,
    ttl: int = DEFAULT_TTL,
) -> bytes:  # fmt: skip
    """An IPv4 or IPv6 header (chosen by address length) followed by ``payload``.

    IPv4 packets are sent with DF and an Identification of zero, which RFC 6864
    §4.1 allows for atomic datagrams.
    """
    if len(source) == 4:
        total = 20 + len(payload)
        header = _IPV4_HEADER.pack(
            0x45, 0, total, 0, _DONT_FRAGMENT, ttl, protocol, 0, source, destination
        )
        checksum = internet_checksum(header)
        return header[:10] + checksum.to_bytes(2, "big") + header[12:] + payload
    header = _IPV6_HEADER.pack(
        0x6 << 28, len(payload), protocol, ttl, source, destination
    )
    return header + payload


def build_udp_packet(
    source: bytes, destination: bytes, source_port: int, destination_port: int,
    payload: bytes,
) -> bytes:  # fmt: skip
    """A whole IP + UDP packet, the inner packet of tunnel mode.

    This runs per packet, so for IPv4 both checksums are summed from the
    header fields directly and both headers are packed in one call.
    """
    if len(source) != 4:
        segment = build_udp(source, destination, source_port, destination_port, payload)
        return build_ip(source, destination, IPPROTO_UDP, segment)
    length = 8 + len(payload)
    total = 20 + length
    addresses = int.from_bytes(source + destination, "big") % 0xFFFF
    data = int.from_bytes(payload, "big")
    if length & 1:
        data <<= 8
    udp_sum = addresses + IPPROTO_UDP + 2 * length + source_port + destination_port
    udp_checksum = _fold_not(udp_sum + data % 0xFFFF, data or udp_sum) or 0xFFFF
    ip_sum = _IPV4_FIXED_SUM + total + addresses
    ip_checksum = _fold_not(ip_sum, ip_sum)
    return (
        _IPV4_UDP_HEADERS.pack(
            0x45,
            0,
            total,
            0,
            _DONT_FRAGMENT,
            DEFAULT_TTL,
            IPPROTO_UDP,
            ip_checksum,
            source,
            destination,
            source_port,
            destination_port,
            length,
            udp_checksum,
        )  # fmt: skip
        + payload
    )


def _fold_not(total: int, nonzero: int) -> int:
    """NOT of the one's complement sum whose plain sum is ``total``."""
    remainder = total % 0xFFFF
    if remainder == 0 and nonzero:
        remainder = 0xFFFF
    return ~remainder & 0xFFFF


def parse_flow(packet: bytes | bytearray | memoryview) -> Flow | None:
    """Read the selector fields of an IPv4 or IPv6 packet, or None if malformed.

    Ports are zero for protocols without ports and for non-first fragments,
    where they are unknown (RFC 4301 §7 handles such fragments separately).
    """
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        return _parse_ipv4(packet)
    if version == 6:
        return _parse_ipv6(packet)
    return None


def _parse_ipv4(packet: bytes | bytearray | memoryview) -> Flow | None:
    header_length = (packet[0] & 0x0F) * 4
    if header_length < 20 or len(packet) < header_length:
        return None
    total_length = int.from_bytes(packet[2:4], "big")
    if total_length < header_length or total_length > len(packet):
        return None
    protocol = packet[9]
    fragment_offset = int.from_bytes(packet[6:8], "big") & 0x1FFF
    source_port = destination_port = 0
    if protocol in _PORTED and fragment_offset == 0:
        if total_length < header_length + 4:
            return None
        source_port, destination_port = _PORTS.unpack_from(packet, header_length)
    return Flow(
        4, protocol, bytes(packet[12:16]), bytes(packet[16:20]),
        source_port, destination_port, header_length,
    )  # fmt: skip


def _parse_ipv6(packet: bytes | bytearray | memoryview) -> Flow | None:
    if len(packet) < 40 or 40 + int.from_bytes(packet[4:6], "big") > len(packet):
        return None
    protocol, offset = packet[6], 40
    first_fragment = True

    # Walk a bounded chain of extension headers to the upper-layer header.
    for _ in range(_MAX_EXTENSIONS):
        if protocol in _IPV6_EXTENSIONS:
            if len(packet) < offset + 8:
                return None
            protocol, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        elif protocol == _IPV6_FRAGMENT:
            if len(packet) < offset + 8:
                return None
            first_fragment = int.from_bytes(packet[offset + 2 : offset + 4]) >> 3 == 0
            protocol, offset = packet[offset], offset + 8
        else:
            break
    else:
        return None

    source_port = destination_port = 0
    if protocol in _PORTED and first_fragment:
        if len(packet) < offset + 4:
            return None
        source_port, destination_port = _PORTS.unpack_from(packet, offset)
    return Flow(
        6, protocol, bytes(packet[8:24]), bytes(packet[24:40]),
        source_port, destination_port, offset,
    )  # fmt: skip


def parse_udp(
    segment: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[int, int, bytes] | None:
    """Source port, destination port and payload of a UDP segment, or None.

    The length field must fit the bytes present; the checksum is not verified
    here because ESP's ICV already covered these bytes (RFC 3948 §3.1.2).
    """
    if len(segment) < offset + 8:
        return None
    source_port, destination_port, length, _ = _UDP_HEADER.unpack_from(segment, offset)
    if length < 8 or offset + length > len(segment):
        return None
    return source_port, destination_port, bytes(segment[offset + 8 : offset + length])
