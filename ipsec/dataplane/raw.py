"""Raw IP sockets for ESP (protocol 50) and AH (51).

This kernel has no ESP or AH of its own (docs/ipsec-datapaths.md), so a raw
socket sees every ESP/AH packet addressed to this host and userspace does all
the work. Opening one needs CAP_NET_RAW; without it :class:`CapabilityMissing`
says so.

An IPv4 raw socket hands over the whole packet, IP header included; an IPv6
one only what follows the IPv6 header (RFC 3542 §3), so the receiver is told
which it got.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from .counters import PathCounters, PathDrop
from .errors import CapabilityMissing

logger = logging.getLogger("ipsec.dataplane")

_READ_BUDGET = 256
_RECEIVE_SIZE = 65535

Address = tuple[Any, ...]
RawHandler = Callable[[bytes, Address], None]


def open_raw_socket(family: int, protocol: int) -> socket.socket:
    """A non-blocking raw socket, or CapabilityMissing naming CAP_NET_RAW."""
    try:
        sock = socket.socket(family, socket.SOCK_RAW, protocol)
    except PermissionError as error:
        raise CapabilityMissing(
            "CAP_NET_RAW", f"opening a raw socket for IP protocol {protocol}"
        ) from error
    sock.setblocking(False)
    return sock


class RawIpSocket:
    """Reads and sends one IP protocol (ESP or AH) on raw sockets.

    ``send_payload`` lets the kernel build the IP header (ESP sealed by the
    engine); ``send_packet`` sends a whole packet the engine built (AH, whose
    ICV covers the IP header) through an IP_HDRINCL socket opened on first use.
    """

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        protocol: int,
        on_packet: RawHandler,
    ) -> None:
        self.sock = sock
        self.loop = loop
        self.protocol = protocol
        self.counters = PathCounters()
        self.includes_ip_header = sock.family == socket.AF_INET
        self._on_packet = on_packet
        self._header_socket: socket.socket | None = None
        loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    def open(
        cls,
        loop: asyncio.AbstractEventLoop,
        protocol: int,
        on_packet: RawHandler,
        host: str = "0.0.0.0",
    ) -> RawIpSocket:
        """Open and bind a raw socket for ``protocol`` on ``host``."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = open_raw_socket(family, protocol)
        try:
            sock.bind((host, 0))
        except BaseException:
            sock.close()
            raise
        return cls(sock, loop, protocol, on_packet)

    def send_payload(self, payload: bytes, destination: str) -> None:
        """Send ``payload`` after an IP header the kernel builds."""
        try:
            self.sock.sendto(payload, (destination, 0))
        except OSError as error:
            self._count_send_failure(error)
            return
        self.counters.packets_out += 1
        self.counters.bytes_out += len(payload)

    def send_packet(self, packet: bytes, destination: str) -> None:
        """Send a whole IP packet as built (IP_HDRINCL; IPv4 and IPv6)."""
        if self._header_socket is None:
            self._header_socket = open_raw_socket(self.sock.family, socket.IPPROTO_RAW)
        try:
            self._header_socket.sendto(packet, (destination, 0))
        except OSError as error:
            self._count_send_failure(error)
            return
        self.counters.packets_out += 1
        self.counters.bytes_out += len(packet)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self._header_socket is not None:
            self._header_socket.close()

    def _on_readable(self) -> None:
        counters = self.counters
        for _ in range(_READ_BUDGET):
            try:
                packet, address = self.sock.recvfrom(_RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                logger.debug("raw receive error: %s", error)
                return
            counters.packets_in += 1
            counters.bytes_in += len(packet)
            self._on_packet(packet, address)

    def _count_send_failure(self, error: OSError) -> None:
        logger.debug("raw send failed: %s", error)
        self.counters.drop(PathDrop.SEND_FAILED)
