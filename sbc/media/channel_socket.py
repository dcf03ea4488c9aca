"""Relay ports inside IPsec: RTP and RTCP through the data plane's channel.

The leg of a call on a protected trunk must never be relayed in clear. Its
ports are not kernel sockets but bindings in the IPsec data plane's
in-process datagram channel (`ipsec.dataplane.DataPlane.bind` and
``send``), on the address the trunk's listener has inside the SA. The
relay's protocol objects, and so latching, counters, drops, RTCP reading,
the timeout and SRTP bridging, are those of every other port: only the
transport under them differs.

A datagram the data plane refuses to seal (no policy, no SA, an expired
SA) reaches the protocol as a send error, which the relay counts as
``send_failed``; the data plane counts it again under its own reason.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from sbc.media.counters import MediaDropReason, StreamCounters
from sbc.media.errors import MediaError

if TYPE_CHECKING:
    from ipsec.dataplane import DataPlane

_IPPROTO_UDP = 17


class ChannelSendDropped(MediaError):
    """The data plane dropped a relayed datagram; the reason is its value."""


class ChannelTransport(asyncio.DatagramTransport):
    """The part of a datagram transport the relay uses, over the channel."""

    def __init__(
        self,
        plane: DataPlane,
        host: str,
        port: int,
        protocol: asyncio.DatagramProtocol,
    ) -> None:
        super().__init__({"sockname": (host, port)})
        self._plane = plane
        self._host = host
        self._port = port
        self._protocol = protocol
        self._closing = False
        plane.bind(host, port, protocol.datagram_received)
        protocol.connection_made(self)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if self._closing:
            self._protocol.error_received(ChannelSendDropped("closed"))
            return
        drop = self._plane.send(
            self._host, addr[0], _IPPROTO_UDP, self._port, addr[1], bytes(data)
        )
        if drop is not None:
            self._protocol.error_received(ChannelSendDropped(drop.value))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._plane.unbind(self._host, self._port)
        self._protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing


def open_channel_pair(
    plane: DataPlane,
    host: str,
    rtp_port: int,
    protocols: tuple[asyncio.DatagramProtocol, asyncio.DatagramProtocol],
) -> None:
    """Bind RTP on ``rtp_port`` and RTCP on the next port, in the channel.

    Nothing is bound in the kernel, so nothing can be busy: the relay's
    port allocator alone keeps the pairs apart.
    """
    rtp, rtcp = protocols
    ChannelTransport(plane, host, rtp_port, rtp)
    ChannelTransport(plane, host, rtp_port + 1, rtcp)


class ParkedPort(asyncio.DatagramProtocol):
    """A leg's socket set aside while the leg is inside IPsec.

    It stays bound, so the leg can come back to it at once; whatever
    arrives on it meanwhile is from no peer of the call and is dropped.
    """

    def __init__(self, counters: StreamCounters) -> None:
        self._counters = counters

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._counters.drops[MediaDropReason.WRONG_SOURCE] += 1
