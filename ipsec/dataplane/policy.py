"""Security policies the data plane matches packets against (RFC 4301 §4.4.1).

A selector pairs a source and a destination address range with a protocol
and port ranges. Addresses are compared packed (big-endian bytes of equal
length compare like the numbers they encode), so matching needs no
``ipaddress`` objects per packet. The data plane caches lookups per flow, so
the ordered scan here runs once per new flow, not once per packet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

ANY_PROTOCOL = 0
Network = IPv4Network | IPv6Network


class Direction(enum.Enum):
    OUT = "out"
    """Traffic leaving through an outbound SA (the SPD proper)."""
    IN = "in"
    """Traffic an inbound SA may carry (checked after decryption)."""


class Action(enum.Enum):
    PROTECT = "protect"
    BYPASS = "bypass"
    DISCARD = "discard"


def _range(network: Network | str) -> tuple[bytes, bytes]:
    net = ip_network(network) if isinstance(network, str) else network
    return net.network_address.packed, net.broadcast_address.packed


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """Source range, destination range, protocol and port ranges.

    Ports are inclusive ranges; protocol 0 means any. Build one from CIDR
    blocks with :meth:`between`, or give first/last addresses (RFC 7296
    §3.13.1 ranges need not be CIDR blocks).
    """

    source_start: bytes
    source_end: bytes
    destination_start: bytes
    destination_end: bytes
    protocol: int = ANY_PROTOCOL
    source_ports: tuple[int, int] = (0, 65535)
    destination_ports: tuple[int, int] = (0, 65535)

    def __post_init__(self) -> None:
        lengths = {len(self.source_start), len(self.source_end)}
        lengths |= {len(self.destination_start), len(self.destination_end)}
        if lengths not in ({4}, {16}):
            raise ValueError("selector addresses must all be IPv4 or all IPv6")
        if self.source_start > self.source_end:
            raise ValueError("source range ends before it starts")
        if self.destination_start > self.destination_end:
            raise ValueError("destination range ends before it starts")
        for low, high in (self.source_ports, self.destination_ports):
            if not 0 <= low <= high <= 65535:
                raise ValueError(f"bad port range {low}-{high}")

    @classmethod
    def between(
        cls,
        source: Network | str,
        destination: Network | str,
        protocol: int = ANY_PROTOCOL,
        source_ports: tuple[int, int] = (0, 65535),
        destination_ports: tuple[int, int] = (0, 65535),
    ) -> TrafficSelector:
        """A selector from two CIDR blocks."""
        source_start, source_end = _range(source)
        destination_start, destination_end = _range(destination)
        return cls(
            source_start, source_end, destination_start, destination_end,
            protocol, source_ports, destination_ports,
        )  # fmt: skip

    @classmethod
    def from_addresses(
        cls,
        source: tuple[str, str],
        destination: tuple[str, str],
        protocol: int = ANY_PROTOCOL,
        source_ports: tuple[int, int] = (0, 65535),
        destination_ports: tuple[int, int] = (0, 65535),
    ) -> TrafficSelector:
        """A selector from (first, last) address ranges."""
        return cls(
            ip_address(source[0]).packed, ip_address(source[1]).packed,
            ip_address(destination[0]).packed, ip_address(destination[1]).packed,
            protocol, source_ports, destination_ports,
        )  # fmt: skip

    def reversed(self) -> TrafficSelector:
        """The same traffic seen from the other end (source and destination swapped)."""
        return TrafficSelector(
            self.destination_start, self.destination_end,
            self.source_start, self.source_end,
            self.protocol, self.destination_ports, self.source_ports,
        )  # fmt: skip

    def matches(
        self,
        protocol: int,
        source: bytes,
        destination: bytes,
        source_port: int,
        destination_port: int,
    ) -> bool:
        """Whether a packet with these fields falls inside the selector."""
        if self.protocol and protocol != self.protocol:
            return False
        if len(source) != len(self.source_start):
            return False
        return (
            self.source_start <= source <= self.source_end
            and self.destination_start <= destination <= self.destination_end
            and self.source_ports[0] <= source_port <= self.source_ports[1]
            and self.destination_ports[0]
            <= destination_port
            <= self.destination_ports[1]
        )


@dataclass(frozen=True, slots=True)
class Policy:
    selector: TrafficSelector
    action: Action
    spi: int | None
    priority: int = 0


@dataclass(slots=True)
class PolicyTable:
    """Ordered outbound policies: lowest priority value first, then insertion."""

    policies: list[Policy] = field(default_factory=list)

    def add(
        self, selector: TrafficSelector, action: Action, spi: int | None, priority: int
    ) -> None:
        self.policies.append(Policy(selector, action, spi, priority))
        self.policies.sort(key=lambda policy: policy.priority)

    def remove(self, selector: TrafficSelector) -> None:
        self.policies = [p for p in self.policies if p.selector != selector]

    def lookup(
        self,
        protocol: int,
        source: bytes,
        destination: bytes,
        source_port: int,
        destination_port: int,
    ) -> Policy | None:
        """The first policy covering the packet, or None (then: drop)."""
        for policy in self.policies:
            if policy.selector.matches(
                protocol, source, destination, source_port, destination_port
            ):
                return policy
        return None
