"""The Security Policy Database (RFC 4301 §4.4.1): which traffic goes to which SA.

Selectors follow IKEv2 traffic selectors (RFC 7296 §3.13.1): an address range,
a port range and an IP protocol (0 for any). Lookups run per packet, so
results are cached per 5-tuple and the cache is emptied on every change.

A TRAP entry stands for an SA not negotiated yet (strongSwan's trap policy,
a kernel's acquire): traffic it covers is to start IKE. It ranks below every
other entry wherever it sits, as a kernel's trap policies have the lowest
priority, so the PROTECT entries of the CHILD_SA it brings up take over and
the trap catches traffic again once they are gone.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from .ip import IPPROTO_FRAGMENT

IPAddress = IPv4Address | IPv6Address
ANY_PROTOCOL = 0

# Protocols whose first four bytes are source and destination port.
_PORT_PROTOCOLS = frozenset((6, 17, 132, 136))  # TCP, UDP, SCTP, UDP-Lite
_PORTS = struct.Struct("!HH")
_IPV6_SKIPPED = frozenset((0, 43, 60))
_CACHE_LIMIT = 4096


class PolicyAction(Enum):
    PROTECT = "protect"
    BYPASS = "bypass"
    DISCARD = "discard"
    TRAP = "trap"
    """Outbound only: no SA yet; the packet asks for one and is dropped."""


class Direction(Enum):
    OUTBOUND = "out"
    INBOUND = "in"


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """One side of a policy: addresses start..end, ports start..end, a protocol."""

    start_address: IPAddress
    end_address: IPAddress
    protocol: int = ANY_PROTOCOL
    start_port: int = 0
    end_port: int = 0xFFFF
    _range: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.start_address.version != self.end_address.version:
            raise ValueError("selector addresses of different IP versions")
        if int(self.start_address) > int(self.end_address):
            raise ValueError("selector start address above end address")
        if not 0 <= self.start_port <= self.end_port <= 0xFFFF:
            raise ValueError("selector port range invalid")
        if not 0 <= self.protocol <= 255:
            raise ValueError("selector protocol outside 0..255")
        version = self.start_address.version
        bounds = (version, int(self.start_address), int(self.end_address))
        object.__setattr__(self, "_range", bounds)

    @classmethod
    def from_network(
        cls,
        network: str | IPv4Network | IPv6Network,
        protocol: int = ANY_PROTOCOL,
        port: int | None = None,
    ) -> TrafficSelector:
        """A selector for a CIDR block and optionally one port."""
        net = ip_network(network) if isinstance(network, str) else network
        low, high = (0, 0xFFFF) if port is None else (port, port)
        return cls(net.network_address, net.broadcast_address, protocol, low, high)

    def matches(self, version: int, address: int, protocol: int, port: int) -> bool:
        """Whether one end of a packet falls in this selector."""
        selector_version, low, high = self._range
        return (
            version == selector_version
            and low <= address <= high
            and (self.protocol == ANY_PROTOCOL or self.protocol == protocol)
            and self.start_port <= port <= self.end_port
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """Traffic between ``local`` and ``remote`` gets ``action`` (via SA ``spi``)."""

    local: TrafficSelector
    remote: TrafficSelector
    action: PolicyAction
    spi: int | None = None
    """The outbound SA (OUTBOUND), or the SA it must arrive on (INBOUND)."""
    direction: Direction = Direction.OUTBOUND


# RFC 4301 §4.4.1: traffic matching no entry is discarded.
DEFAULT_POLICY = Policy(
    TrafficSelector(IPv4Address(0), IPv4Address(0)),
    TrafficSelector(IPv4Address(0), IPv4Address(0)),
    PolicyAction.DISCARD,
)

_CacheKey = tuple[int, bytes, bytes, int, int, Direction]


class SecurityPolicyDatabase:
    """An ordered list of policies; the first match wins (RFC 4301 §4.4.1)."""

    def __init__(self) -> None:
        self._policies: list[Policy] = []
        self._cache: dict[_CacheKey, Policy] = {}

    def __len__(self) -> int:
        return len(self._policies)

    def __iter__(self) -> Iterator[Policy]:
        # Iterating a snapshot keeps callers safe while policies change.
        return iter(list(self._policies))

    def add(
        self,
        local: TrafficSelector,
        remote: TrafficSelector,
        action: PolicyAction = PolicyAction.PROTECT,
        spi: int | None = None,
        direction: Direction = Direction.OUTBOUND,
        index: int | None = None,
    ) -> Policy:
        """Insert a policy at ``index`` (default: last) and return it."""
        if (action is PolicyAction.PROTECT) != (spi is not None):
            raise ValueError("PROTECT policies, and only they, name an SPI")
        if action is PolicyAction.TRAP and direction is not Direction.OUTBOUND:
            raise ValueError("TRAP policies are outbound only")
        policy = Policy(local, remote, action, spi, direction)
        self._policies.insert(len(self._policies) if index is None else index, policy)
        self._cache.clear()
        return policy

    def remove(self, policy: Policy) -> None:
        """Remove the entry ``add`` returned (ValueError if it is not here)."""
        # By identity: comparing frozen policies field by field made each
        # removal cost a walk of equality checks over the whole table.
        for index, entry in enumerate(self._policies):
            if entry is policy:
                del self._policies[index]
                self._cache.clear()
                return
        raise ValueError("policy not in the SPD")

    def remove_spi(self, spi: int) -> int:
        """Remove every policy naming ``spi``; return how many there were."""
        kept = [p for p in self._policies if p.spi != spi]
        removed = len(self._policies) - len(kept)
        self._policies = kept
        self._cache.clear()
        return removed

    def lookup(
        self,
        source: IPAddress,
        destination: IPAddress,
        protocol: int,
        source_port: int = 0,
        destination_port: int = 0,
        direction: Direction = Direction.OUTBOUND,
    ) -> Policy:
        """The policy for one packet's fields (DEFAULT_POLICY if none matches)."""
        key = (
            source.version,
            source.packed,
            destination.packed,
            protocol,
            source_port << 16 | destination_port,
            direction,
        )
        return self._cached(key)

    def lookup_packet(
        self, packet: bytes, direction: Direction = Direction.OUTBOUND
    ) -> Policy:
        """The policy for a clear IP packet, read from its headers."""
        fields = _packet_fields(packet)
        if fields is None:
            return DEFAULT_POLICY
        version, source, destination, protocol, ports = fields
        return self._cached((version, source, destination, protocol, ports, direction))

    def admits_inbound(self, spi: int, packet: bytes) -> bool:
        """Whether a packet that arrived on SA ``spi`` was allowed to use it.

        RFC 4301 §5.2 step 4: after decapsulation the inner packet must match
        the inbound policy of the SA it came through.
        """
        policy = self.lookup_packet(packet, Direction.INBOUND)
        return policy.action is PolicyAction.PROTECT and policy.spi == spi

    def _cached(self, key: _CacheKey) -> Policy:
        policy = self._cache.get(key)
        if policy is None:
            policy = self._search(key)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = policy
        return policy

    def _search(self, key: _CacheKey) -> Policy:
        version, source, destination, protocol, ports, direction = key
        source_int = int.from_bytes(source, "big")
        destination_int = int.from_bytes(destination, "big")
        source_port, destination_port = ports >> 16, ports & 0xFFFF
        trap = DEFAULT_POLICY
        for policy in self._policies:
            if policy.direction is not direction:
                continue
            # Outbound traffic leaves from local; inbound traffic comes from remote.
            near, far = (
                (policy.local, policy.remote)
                if direction is Direction.OUTBOUND
                else (policy.remote, policy.local)
            )
            if near.matches(version, source_int, protocol, source_port) and far.matches(
                version, destination_int, protocol, destination_port
            ):
                if policy.action is not PolicyAction.TRAP:
                    return policy
                if trap is DEFAULT_POLICY:
                    trap = policy  # the lowest rank: used if nothing else matches
        return trap


def _packet_fields(packet: bytes) -> tuple[int, bytes, bytes, int, int] | None:
    """(version, source, destination, protocol, ports) of a clear IP packet."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        header_length = (packet[0] & 0x0F) * 4
        fragment_offset = _PORTS.unpack_from(packet, 6)[0] & 0x1FFF
        protocol = packet[9]
        ports = 0
        if protocol in _PORT_PROTOCOLS and not fragment_offset:
            ports = _ports_at(packet, header_length)
        return 4, packet[12:16], packet[16:20], protocol, ports
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        protocol, offset = _ipv6_upper_layer(packet)
        ports = _ports_at(packet, offset) if protocol in _PORT_PROTOCOLS else 0
        return 6, packet[8:24], packet[24:40], protocol, ports
    return None


def _ports_at(packet: bytes, offset: int) -> int:
    if offset + 4 > len(packet):
        return 0
    source_port, destination_port = _PORTS.unpack_from(packet, offset)
    return int(source_port << 16 | destination_port)


def _ipv6_upper_layer(packet: bytes) -> tuple[int, int]:
    # RFC 4301 §4.4.1.1: selectors apply to the upper-layer protocol, so skip
    # the extension headers (a bounded number of them).
    protocol, offset = packet[6], 40
    for _ in range(8):
        if protocol not in _IPV6_SKIPPED or offset + 2 > len(packet):
            break
        protocol, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
    if protocol == IPPROTO_FRAGMENT:
        return protocol, len(packet)
    return protocol, offset
