"""Just enough IPv4 and IPv6 to place, find and strip ESP and AH headers."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from .results import DropReason, MalformedPacket

IPPROTO_HOPOPTS = 0
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_DSTOPTS = 60

# Extension headers an IPv6 walk may step over; any other value ends it.
_IPV6_EXTENSIONS = frozenset((IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS))
# No packet has more extension headers than this in practice; the bound keeps
# a crafted chain from costing more than a few steps.
_MAX_EXTENSIONS = 8
_DEFAULT_HOP_LIMIT = 64

_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!LHBB16s16s")
_U16 = struct.Struct("!H")


def ipv4_checksum(header: bytes | bytearray) -> int:
    """The RFC 791 header checksum of ``header`` (its checksum field zeroed)."""
    # The one's-complement sum of 16-bit words is the value mod 2^16 - 1,
    # because 2^16 is 1 modulo 2^16 - 1 (RFC 1071 §2).
    value = int.from_bytes(header, "big")
    folded = value % 0xFFFF
    if folded == 0 and value:
        folded = 0xFFFF
    return ~folded & 0xFFFF


def locate_insertion(packet: bytes) -> tuple[int, int]:
    """Where transport mode puts ESP or AH: (offset, offset of the next-header byte).

    IPv4: right after the header and its options. IPv6 (RFC 4303 §3.1.1,
    RFC 4302 §3.1.1): after hop-by-hop, routing and the destination options
    that precede a routing header, the same split Linux and scapy make.
    """
    if not packet:
        raise MalformedPacket("empty packet")
    if packet[0] >> 4 == 4:
        return _ipv4_header_length(packet), 9
    if packet[0] >> 4 == 6 and len(packet) >= 40:
        return _ipv6_insertion(packet)
    raise MalformedPacket("not an IPv4 or IPv6 packet")


def _ipv4_header_length(packet: bytes) -> int:
    header_length = (packet[0] & 0x0F) * 4
    if header_length < 20 or len(packet) < header_length:
        raise MalformedPacket("IPv4 header truncated")
    if _U16.unpack_from(packet, 2)[0] != len(packet):
        raise MalformedPacket("IPv4 total length disagrees with the packet")
    if _U16.unpack_from(packet, 6)[0] & 0x3FFF:
        # RFC 4301 §5.1: IPsec applies to whole datagrams, never to fragments.
        raise MalformedPacket("IPv4 fragment")
    return header_length


def _ipv6_insertion(packet: bytes) -> tuple[int, int]:
    if _U16.unpack_from(packet, 4)[0] + 40 != len(packet):
        raise MalformedPacket("IPv6 payload length disagrees with the packet")
    offset, next_header_offset = 40, 6
    seen_routing = False
    for _ in range(_MAX_EXTENSIONS):
        next_header = packet[next_header_offset]
        if next_header == IPPROTO_FRAGMENT:
            raise MalformedPacket("IPv6 fragment")
        if next_header not in _IPV6_EXTENSIONS:
            return offset, next_header_offset
        if next_header == IPPROTO_DSTOPTS and seen_routing:
            return offset, next_header_offset
        seen_routing = seen_routing or next_header == IPPROTO_ROUTING
        if offset + 2 > len(packet):
            raise MalformedPacket("IPv6 extension header truncated")
        offset, next_header_offset = offset + (packet[offset + 1] + 1) * 8, offset
        if offset > len(packet):
            raise MalformedPacket("IPv6 extension header truncated")
    raise MalformedPacket("too many IPv6 extension headers")


def locate_protocol(packet: bytes, protocol: int) -> tuple[int, int, int] | DropReason:
    """Find the ESP or AH header of a received packet.

    Returns (header offset, offset of the byte naming it, end of the IP
    datagram), or why the packet must be dropped. Never raises.
    """
    if len(packet) < 20:
        return DropReason.TRUNCATED
    version = packet[0] >> 4
    if version == 4:
        return _locate_in_ipv4(packet, protocol)
    if version == 6:
        return _locate_in_ipv6(packet, protocol)
    return DropReason.MALFORMED


def _locate_in_ipv4(packet: bytes, protocol: int) -> tuple[int, int, int] | DropReason:
    header_length = (packet[0] & 0x0F) * 4
    total_length = _U16.unpack_from(packet, 2)[0]
    if header_length < 20 or total_length < header_length:
        return DropReason.MALFORMED
    if total_length > len(packet):
        return DropReason.TRUNCATED
    if _U16.unpack_from(packet, 6)[0] & 0x3FFF:
        # RFC 4303 §3.4.1: fragments are reassembled before ESP processing.
        return DropReason.MALFORMED
    if packet[9] != protocol:
        return DropReason.POLICY_MISMATCH
    return header_length, 9, total_length


def _locate_in_ipv6(packet: bytes, protocol: int) -> tuple[int, int, int] | DropReason:
    if len(packet) < 40:
        return DropReason.TRUNCATED
    end = 40 + _U16.unpack_from(packet, 4)[0]
    if end > len(packet):
        return DropReason.TRUNCATED
    offset, next_header_offset = 40, 6
    for _ in range(_MAX_EXTENSIONS):
        next_header = packet[next_header_offset]
        if next_header == protocol:
            return offset, next_header_offset, end
        if next_header not in _IPV6_EXTENSIONS:
            if next_header == IPPROTO_FRAGMENT:
                return DropReason.MALFORMED
            return DropReason.POLICY_MISMATCH
        if offset + 2 > end:
            return DropReason.TRUNCATED
        offset, next_header_offset = offset + (packet[offset + 1] + 1) * 8, offset
        if offset > end:
            return DropReason.TRUNCATED
    return DropReason.MALFORMED


def rewrite_header(
    packet: bytes,
    header_end: int,
    next_header_offset: int,
    next_header: int,
    payload_length: int,
) -> bytearray:
    """Copy the IP header chain with a new next header and payload length."""
    header = bytearray(packet[:header_end])
    header[next_header_offset] = next_header
    _check_fits(header_end + payload_length - (0 if header[0] >> 4 == 4 else 40))
    if header[0] >> 4 == 4:
        _U16.pack_into(header, 2, header_end + payload_length)
        header[10:12] = b"\0\0"
        _U16.pack_into(header, 10, ipv4_checksum(header))
    else:
        _U16.pack_into(header, 4, header_end - 40 + payload_length)
    return header


def _check_fits(length: int) -> None:
    # IPv4 Total Length and IPv6 Payload Length are 16-bit fields (jumbograms
    # are not supported).
    if length > 0xFFFF:
        raise MalformedPacket("packet too large once protected")


def inner_version_matches(next_header: int, inner: bytes) -> bool:
    """Whether a tunnelled payload is the IP version its next header names."""
    if not inner:
        return False
    version = inner[0] >> 4
    if next_header == IPPROTO_IPIP:
        return version == 4 and len(inner) >= 20
    return next_header == IPPROTO_IPV6 and version == 6 and len(inner) >= 40


class OuterHeader:
    """Builds the tunnel-mode outer IP header (RFC 4301 §5.1.2)."""

    __slots__ = ("version", "length", "_source", "_destination", "_protocol")

    def __init__(
        self,
        source: IPv4Address | IPv6Address,
        destination: IPv4Address | IPv6Address,
        protocol: int,
    ) -> None:
        self.version = source.version
        self.length = 20 if self.version == 4 else 40
        self._source = source.packed
        self._destination = destination.packed
        self._protocol = protocol

    def build(self, inner: bytes, payload_length: int, identification: int) -> bytes:
        """The outer header for ``inner``, ahead of ``payload_length`` bytes.

        DSCP and ECN are copied from the inner header (RFC 4301 §5.1.2.1,
        RFC 6040 normal mode), as is the IPv4 DF bit.
        """
        traffic_class, dont_fragment = _inner_class_and_df(inner)
        _check_fits(payload_length + (20 if self.version == 4 else 0))
        if self.version == 4:
            header = bytearray(20)
            _IPV4_HEADER.pack_into(
                header,
                0,
                0x45,
                traffic_class,
                20 + payload_length,
                identification & 0xFFFF,
                dont_fragment,
                _DEFAULT_HOP_LIMIT,
                self._protocol,
                0,
                self._source,
                self._destination,
            )
            _U16.pack_into(header, 10, ipv4_checksum(header))
            return bytes(header)
        return _IPV6_HEADER.pack(
            0x60000000 | traffic_class << 20,
            payload_length,
            self._protocol,
            _DEFAULT_HOP_LIMIT,
            self._source,
            self._destination,
        )


def _inner_class_and_df(inner: bytes) -> tuple[int, int]:
    if inner[0] >> 4 == 4:
        return inner[1], _U16.unpack_from(inner, 6)[0] & 0x4000
    return (inner[0] & 0x0F) << 4 | inner[1] >> 4, 0


def tunnel_next_header(inner: bytes) -> int:
    """The protocol number naming a tunnelled packet (RFC 4303 §2.6)."""
    if inner and inner[0] >> 4 == 4 and len(inner) >= 20:
        return IPPROTO_IPIP
    if inner and inner[0] >> 4 == 6 and len(inner) >= 40:
        return IPPROTO_IPV6
    raise MalformedPacket("not an IPv4 or IPv6 packet")
