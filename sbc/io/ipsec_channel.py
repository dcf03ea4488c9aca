"""SIP over the IPsec data plane's datagram channel: UDP inside ESP.

A listener marked ``ipsec`` is no kernel socket. It is a binding in the
data plane's in-process channel (`ipsec.dataplane.DataPlane.bind`): the
peer's datagrams reach it decrypted, with their inner source address, and
what it sends is sealed in the CHILD_SA the SPD picks (`DataPlane.send`).
Framing, the Via transport (UDP) and the retransmission rules are those of
UDP; only the path differs.

A send the data plane drops (no policy, no SA, an expired SA) is counted
by its reason and never retried on a kernel socket: the endpoint fails the
transactions to that destination at once, as for an unreachable host.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol

from sbc.io.addresses import Address
from sbc.io.settings import ListenSpec

if TYPE_CHECKING:
    from ipsec.dataplane import DataPlane
    from sbc.config.model import Config

_IPPROTO_UDP = 17

LISTENER_CLOSED = "listener_closed"
"""The drop reason of a send through an IPsec listener closed meanwhile."""
NOT_UDP = "not_udp"
"""The drop reason of a TCP or TLS message for a host reached inside IPsec."""


class ChannelUnavailable(OSError):
    """An IPsec listener cannot be opened (no data plane, not UDP, no port).

    An OSError so that whoever starts the endpoint reports it like a socket
    that cannot be bound.
    """


class ChannelSink(Protocol):
    """What a channel listener hands its datagrams to (the endpoint)."""

    def datagram_received(
        self, data: bytes, source: Address, listener: ChannelListener
    ) -> None: ...


class ChannelCounters:
    """What the IPsec listeners received, sent and had dropped."""

    __slots__ = ("received", "sent", "keepalives", "drops")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0
        self.keepalives = 0
        self.drops: Counter[str] = Counter()
        """Sends the data plane refused, by its reason (``no_sa``, ...)."""

    def snapshot(self) -> dict[str, int]:
        numbers = {
            "received": self.received,
            "sent": self.sent,
            "keepalives": self.keepalives,
        }
        numbers.update({f"drop.{reason}": n for reason, n in self.drops.items()})
        return numbers


class ChannelListener:
    """One (address, port) bound in the data plane's datagram channel."""

    transport_name = "UDP"

    def __init__(
        self,
        plane: DataPlane,
        spec: ListenSpec,
        sink: ChannelSink,
        counters: ChannelCounters,
    ) -> None:
        check_channel_spec(spec)
        self.plane = plane
        self.spec = spec
        self.local: Address = (spec.host, spec.port)
        self.closed = False
        self._sink = sink
        self._counters = counters

    def open(self) -> None:
        self.plane.bind(self.spec.host, self.spec.port, self._on_datagram)

    def close(self) -> None:
        self.closed = True
        self.plane.unbind(self.spec.host, self.spec.port)

    def send(self, data: bytes, destination: Address) -> str | None:
        """Seal ``data`` toward ``destination``; the drop reason, if any."""
        if self.closed:
            self._counters.drops[LISTENER_CLOSED] += 1
            return LISTENER_CLOSED
        host, port = destination
        drop = self.plane.send(
            self.spec.host, host, _IPPROTO_UDP, self.spec.port, port, data
        )
        if drop is None:
            self._counters.sent += 1
            return None
        self._counters.drops[drop.value] += 1
        return str(drop.value)

    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        self._counters.received += 1
        # As on a kernel socket: CRLF-only datagrams are keepalives.
        if not data.strip(b"\r\n"):
            self._counters.keepalives += 1
            return
        self._sink.datagram_received(data, source, self)


def check_channel_spec(spec: ListenSpec) -> None:
    """Raise ChannelUnavailable unless ``spec`` can live in the channel."""
    if spec.transport != "UDP":
        raise ChannelUnavailable(f"{spec}: only UDP is carried inside IPsec")
    if spec.port == 0:
        # The peer's traffic selectors and Via name the port; there is no
        # kernel to pick one.
        raise ChannelUnavailable(f"{spec}: a listener inside IPsec needs a port")


def ipsec_peers(config: Config) -> dict[str, Address]:
    """Each protected trunk's target host -> the IPsec listener that reaches it.

    A trunk naming an IPsec profile sends everything through its first
    IPsec listener (whose port is the configured one: no kernel picks it).
    Trunks without a profile are not listed.
    """
    peers: dict[str, Address] = {}
    for trunk in config.trunks:
        if trunk.ipsec_profile is None:
            continue
        listeners = (config.listener(name) for name in trunk.listeners)
        listener = next((item for item in listeners if item and item.ipsec), None)
        if listener is None:
            continue
        for target in trunk.targets:
            peers[target.host] = (str(listener.address), listener.port)
    return peers
