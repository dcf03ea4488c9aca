"""SIP over UDP: one datagram is one message (RFC 3261 §18.3)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Protocol, cast

from sbc.io.addresses import Address, address_of
from sbc.io.counters import DropReason, TransportCounters
from sbc.log import TRANSPORT_LOGGER

_log = logging.getLogger(TRANSPORT_LOGGER)


class DatagramSink(Protocol):
    """What a UDP listener hands its datagrams to."""

    def datagram_received(
        self, data: bytes, source: Address, listener: UdpListener
    ) -> None: ...


class UdpListener(asyncio.DatagramProtocol):
    """One bound UDP socket; passes each datagram up unparsed."""

    transport_name = "UDP"

    def __init__(self, sink: DatagramSink, counters: TransportCounters) -> None:
        self._sink = sink
        self._counters = counters
        self._transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.local = address_of(transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._counters.received += 1
        source = address_of(addr)
        # A datagram of only CRLFs is a keepalive some UAs send on UDP too;
        # there is nothing to answer (RFC 5626 pongs are for streams).
        if not data.strip(b"\r\n"):
            self._counters.keepalives += 1
            return
        self._sink.datagram_received(data, source, self)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like, about an earlier send.
        self._counters.drop(DropReason.ICMP_ERROR)
        _log.debug("udp:%s: ICMP error for an earlier send: %s", self.local, exc)

    def send(self, data: bytes, destination: Address) -> None:
        if self._transport is None or self._transport.is_closing():
            self._counters.drop(DropReason.SEND_FAILED)
            return
        self._transport.sendto(data, destination)
        self._counters.sent += 1

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_udp_listener(
    host: str,
    port: int,
    sink: DatagramSink,
    counters: TransportCounters,
    receive_buffer: int,
) -> UdpListener:
    """Bind ``host:port`` and start reading datagrams into ``sink``."""
    sock = _bound_socket(host, port, receive_buffer)
    loop = asyncio.get_running_loop()
    listener = UdpListener(sink, counters)
    await loop.create_datagram_endpoint(lambda: listener, sock=sock)
    return listener


def _bound_socket(host: str, port: int, receive_buffer: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # Bursts of datagrams up to 65,535 bytes must fit while the loop is
        # busy; the kernel caps the request at net.core.rmem_max.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
