"""The Authentication Header (RFC 4302): layout and the ICV over immutable fields."""

from __future__ import annotations

import struct

AH_HEADER = struct.Struct("!BBHLL")
AH_FIXED_LENGTH = 12

# RFC 4302 Appendix A.1: IPv4 options included in the ICV as they are (by
# full option type: EOL, NOP, Security, Extended Security, Commercial
# Security, Router Alert, SDMDD). Every other option is zeroed whole.
_IMMUTABLE_IPV4_OPTIONS = frozenset((0, 1, 130, 133, 134, 148, 149))
# The longest AH: Payload Length 255 means (255 + 2) * 4 bytes.
_ZEROS = bytes(1028)


def ah_length(icv_length: int, ip_version: int) -> int:
    """AH length with ICV padding to 32 bits (IPv4) or 64 bits (IPv6), RFC 4302 §2.6."""
    unit = 4 if ip_version == 4 else 8
    return -(-(AH_FIXED_LENGTH + icv_length) // unit) * unit


def zeros(length: int) -> bytes:
    """``length`` zero bytes: the ICV as it enters its own computation, and
    the ICV padding this sender uses."""
    return _ZEROS[:length]


def immutable_header(header: bytes | bytearray, sending: bool) -> bytearray | None:
    """The IP header chain before AH with every mutable field zeroed.

    RFC 4302 §3.3.3.1. A sender also puts a routing header into the form the
    receiver will see. None if the header chain is malformed.
    """
    copy = bytearray(header)
    if copy[0] >> 4 == 4:
        return copy if _zero_ipv4(copy) else None
    return copy if _zero_ipv6(copy, sending) else None


def _zero_ipv4(header: bytearray) -> bool:
    # RFC 4302 §3.3.3.1.1.1: TOS, flags, fragment offset, TTL, checksum.
    header[1] = 0
    header[6:9] = b"\0\0\0"
    header[10:12] = b"\0\0"
    return _zero_ipv4_options(header)


def _zero_ipv4_options(header: bytearray) -> bool:
    offset = 20
    while offset < len(header):
        option = header[offset]
        if option == 0:
            return True
        if option == 1:
            offset += 1
            continue
        if offset + 1 >= len(header):
            return False
        length = header[offset + 1]
        if length < 2 or offset + length > len(header):
            return False
        if option not in _IMMUTABLE_IPV4_OPTIONS:
            header[offset : offset + length] = bytes(length)
        offset += length
    return True


def _zero_ipv6(header: bytearray, sending: bool) -> bool:
    # RFC 4302 §3.3.3.1.2.1: traffic class, flow label and hop limit.
    header[0] = 0x60
    header[1:4] = b"\0\0\0"
    header[7] = 0
    offset, next_header = 40, header[6]
    while offset < len(header):
        if offset + 2 > len(header):
            return False
        length = (header[offset + 1] + 1) * 8
        if offset + length > len(header):
            return False
        if next_header in (0, 60):
            zeroed = _zero_mutable_options(header, offset + 2, offset + length)
        elif next_header == 43:
            zeroed = not sending or _predict_routing(header, offset, length)
        else:
            return False
        if not zeroed:
            return False
        next_header = header[offset]
        offset += length
    return True


def _zero_mutable_options(header: bytearray, offset: int, end: int) -> bool:
    # RFC 8200 §4.2: the third-highest bit of the option type marks option
    # data that may change en route; such data is zeroed (RFC 4302 §3.3.3.1.2.2).
    while offset < end:
        option = header[offset]
        if option == 0:
            offset += 1
            continue
        if offset + 2 > end or offset + 2 + header[offset + 1] > end:
            return False
        length = header[offset + 1]
        if option & 0x20:
            header[offset + 2 : offset + 2 + length] = bytes(length)
        offset += 2 + length
    return True


def _predict_routing(header: bytearray, offset: int, length: int) -> bool:
    # RFC 4302 §3.3.3.1.2.2: the sender computes the ICV over the routing
    # header as it will arrive: final destination in the IPv6 header, the
    # address list rotated, Segments Left 0. Types 0 and 2 carry a plain
    # address list; other types with segments left cannot be predicted here.
    routing_type, segments_left = header[offset + 2], header[offset + 3]
    if segments_left == 0:
        return True
    if routing_type not in (0, 2):
        return False
    addresses = header[offset + 8 : offset + length]
    final = addresses[-16:]
    header[offset + 8 : offset + length] = header[24:40] + addresses[:-16]
    header[24:40] = final
    header[offset + 3] = 0
    return True
