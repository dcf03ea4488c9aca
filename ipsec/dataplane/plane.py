"""The data plane: SAs and policies installed by IKE, packets moved by asyncio.

:class:`DataPlane` is the narrow interface the IKE daemon uses, modelled on a
kernel's IPsec interface (get_spi, add_sa, update_sa, del_sa, add_policy,
del_policy, counters), and the dispatcher between the transports (UDP
encapsulation, raw ESP/AH), the sans-IO engine (ipsec.esp) and the
consumers of cleartext (the in-process channel and the TUN gateway).

Outbound: a packet's selector fields pick an SPD entry; PROTECT seals it with
that entry's SA and sends it, DISCARD and a missing entry drop it (counted,
never sent in clear). Inbound: the SPI picks the SA, the engine verifies and
decrypts, and the inner packet must fall inside one of the SA's inbound
selectors (RFC 4301 §5.2) before it reaches a handler or the TUN.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from ipsec.esp import (
    Drop,
    DropReason,
    InboundSA,
    LifetimeEvent,
    Mode,
    OutboundSA,
    Protocol,
    SAConfig,
    SACounters,
    SAExpired,
)

from .counters import PathCounters, PathDrop
from .errors import DataPlaneError, DuplicateSA, UnknownSA
from .packet import (
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_UDP,
    Flow,
    build_udp,
    build_udp_packet,
    parse_flow,
    parse_udp,
)
from .policy import Action, Direction, PolicyTable, TrafficSelector
from .raw import RawIpSocket
from .tun import TunDevice
from .udp_encap import IKE_PORT_NAT_T, UdpEncapSocket

logger = logging.getLogger("ipsec.dataplane")

IPAddress = IPv4Address | IPv6Address
AddressLike = IPv4Address | IPv6Address | str
Address = tuple[Any, ...]
DatagramHandler = Callable[[bytes, tuple[str, int]], None]
LifetimeHandler = Callable[[LifetimeEvent], None]

_LIFETIME_TICK = 1.0
_FLOW_CACHE_LIMIT = 8192
_MINIMUM_SPI = 256


class Transport(enum.Enum):
    """How an SA's packets travel between the peers."""

    UDP = "udp"
    """ESP in UDP (RFC 3948), the default: works through NAT, no privileges."""
    RAW = "raw"
    """ESP or AH straight over IP (protocol 50/51), needs CAP_NET_RAW."""


@dataclass(slots=True)
class _Outbound:
    sa: OutboundSA
    transport: Transport
    peer: Address
    """(address, port) for UDP, (address,) for raw."""
    tunnel: bool
    local: bytes
    remote: bytes
    """Outer addresses, packed: the transport-mode UDP checksum covers them."""
    sender: UdpEncapSocket | RawIpSocket


@dataclass(slots=True)
class _Inbound:
    sa: InboundSA
    tunnel: bool
    local: bytes
    remote: bytes
    selectors: list[TrafficSelector] = field(default_factory=list)


class DataPlane:
    """SAs, policies and the packet paths between them, on one event loop.

    ``on_lifetime_event`` receives the engine's Soft/HardLifetimeReached
    events (checked once a second and whenever a packet crosses a limit).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        on_lifetime_event: LifetimeHandler | None = None,
        spi_source: Callable[[], int] | None = None,
    ) -> None:
        self.loop = loop
        self.channel_counters = PathCounters()
        self.unknown_spi_drops = 0
        self.policy_mismatch_drops = 0
        self._policies = PolicyTable()
        self._outbound: dict[int, _Outbound] = {}
        self._inbound: dict[int, _Inbound] = {}
        self._reserved_spis: set[int] = set()
        self._flows: dict[tuple[int, bytes, bytes, int, int], _Outbound | PathDrop] = {}
        self._handlers: dict[tuple[bytes, int], DatagramHandler] = {}
        self._encap: dict[str, UdpEncapSocket] = {}
        self._raw: dict[tuple[str, int], RawIpSocket] = {}
        self._tun: TunDevice | None = None
        self._on_lifetime_event = on_lifetime_event
        self._spi_source = spi_source or (lambda: secrets.randbits(32))
        self._ike_handler: Callable[[bytes, Address, Address], None] | None = None
        self._lifetime_timer = loop.call_later(_LIFETIME_TICK, self._check_lifetimes)

    # -- transports -------------------------------------------------------

    def open_udp_encap(
        self, host: str = "0.0.0.0", port: int = IKE_PORT_NAT_T, **options: Any
    ) -> UdpEncapSocket:
        """Open the RFC 3948 socket for one local address (shared with IKE)."""
        if host in self._encap:
            raise DataPlaneError(f"a UDP encapsulation socket on {host} exists")
        encap = UdpEncapSocket.open(self.loop, self._on_esp, host, port, **options)
        self._encap[host] = encap
        self._install_ike_handler(host, encap)
        return encap

    def open_raw(self, protocol: Protocol, host: str = "0.0.0.0") -> RawIpSocket:
        """Open a raw socket for ESP or AH on ``host`` (needs CAP_NET_RAW)."""
        key = (host, int(protocol))
        if key in self._raw:
            return self._raw[key]

        def on_packet(packet: bytes, address: Address) -> None:
            self._on_raw(raw, packet, address)

        raw = RawIpSocket.open(self.loop, int(protocol), on_packet, host)
        self._raw[key] = raw
        return raw

    def attach_tun(self, tun: TunDevice) -> None:
        """Protect what the kernel routes into ``tun``; write decrypted back."""
        self._tun = tun
        tun.attach(self.loop, self._on_tun_packet)

    def set_ike_handler(
        self, handler: Callable[[bytes, Address, Address], None]
    ) -> None:
        """``handler(message, local, remote)`` for IKE on every encap socket."""
        self._ike_handler = handler
        for host, encap in self._encap.items():
            self._install_ike_handler(host, encap)

    def send_ike(self, message: bytes, local_host: str, remote: Address) -> None:
        """Send an IKE message from the encap socket on ``local_host``."""
        self._encap[local_host].send_ike(message, remote)

    def close(self) -> None:
        self._lifetime_timer.cancel()
        for encap in self._encap.values():
            encap.close()
        for raw in self._raw.values():
            raw.close()
        if self._tun is not None:
            self._tun.close()
        self._encap.clear()
        self._raw.clear()
        self._tun = None

    # -- the kernel-like SA and policy interface -------------------------

    def get_spi(self) -> int:
        """Reserve a fresh inbound SPI (RFC 4303 §2.1: 256 and up)."""
        for _ in range(64):
            spi = self._spi_source() & 0xFFFFFFFF
            if spi >= _MINIMUM_SPI and spi not in self._inbound:
                if spi not in self._reserved_spis:
                    self._reserved_spis.add(spi)
                    return spi
        raise DataPlaneError("no free SPI found")

    def add_sa(
        self,
        config: SAConfig,
        *,
        inbound: bool,
        transport: Transport = Transport.UDP,
        peer: AddressLike | None = None,
        peer_port: int = IKE_PORT_NAT_T,
        local: AddressLike | None = None,
    ) -> None:
        """Install one direction of a CHILD_SA.

        ``peer`` is where outbound packets go (default: the SA's tunnel
        destination); ``local`` the outer address of this end (default: the
        SA's tunnel source outbound, tunnel destination inbound).
        """
        now = self.loop.time()
        if inbound:
            self._add_inbound(config, now, local)
        else:
            self._add_outbound(config, now, transport, peer, peer_port, local)
        self._flows.clear()

    def update_sa(
        self,
        spi: int,
        *,
        peer: AddressLike | None = None,
        peer_port: int | None = None,
    ) -> None:
        """Move an outbound SA to a new peer address or port (NAT rebinding)."""
        entry = self._outbound.get(spi)
        if entry is None:
            raise UnknownSA(spi)
        address = str(peer) if peer is not None else entry.peer[0]
        if entry.transport is Transport.UDP:
            port = peer_port if peer_port is not None else entry.peer[1]
            entry.peer = (address, port)
        else:
            entry.peer = (address,)

    def del_sa(self, spi: int, *, inbound: bool) -> None:
        """Remove one direction of a CHILD_SA; its policies stay until removed."""
        table: dict[int, Any] = self._inbound if inbound else self._outbound
        if table.pop(spi, None) is None:
            raise UnknownSA(spi)
        self._reserved_spis.discard(spi)
        self._flows.clear()

    def add_policy(
        self,
        selector: TrafficSelector,
        spi: int | None = None,
        *,
        direction: Direction = Direction.OUT,
        action: Action = Action.PROTECT,
        priority: int = 0,
    ) -> None:
        """Add an SPD entry; PROTECT needs the SPI of the SA it uses."""
        if action is Action.PROTECT and spi is None:
            raise DataPlaneError("a PROTECT policy needs an SPI")
        if direction is Direction.IN:
            if spi is None or spi not in self._inbound:
                raise UnknownSA(spi or 0)
            self._inbound[spi].selectors.append(selector)
            return
        self._policies.add(selector, action, spi, priority)
        self._flows.clear()

    def del_policy(
        self, selector: TrafficSelector, *, direction: Direction = Direction.OUT
    ) -> None:
        """Remove an SPD entry (every inbound SA's copy for ``Direction.IN``)."""
        if direction is Direction.IN:
            for entry in self._inbound.values():
                if selector in entry.selectors:
                    entry.selectors.remove(selector)
            return
        self._policies.remove(selector)
        self._flows.clear()

    def counters(self, spi: int, *, inbound: bool | None = None) -> SACounters:
        """The engine's live counters of an SA (inbound first when ambiguous)."""
        if inbound is not False and spi in self._inbound:
            return self._inbound[spi].sa.counters
        if inbound is not True and spi in self._outbound:
            return self._outbound[spi].sa.counters
        raise UnknownSA(spi)

    def stats(self) -> dict[str, Any]:
        """Per-path, per-SA and per-reason counters for the admin plane."""
        return {
            "paths": {
                **{f"udp:{h}": e.counters.snapshot() for h, e in self._encap.items()},
                **{
                    f"raw:{h}:{p}": r.counters.snapshot()
                    for (h, p), r in self._raw.items()
                },
                **({"tun": self._tun.counters.snapshot()} if self._tun else {}),
                "channel": self.channel_counters.snapshot(),
            },
            "inbound": {
                spi: _sa_stats(e.sa.counters) for spi, e in self._inbound.items()
            },
            "outbound": {
                spi: _sa_stats(e.sa.counters) for spi, e in self._outbound.items()
            },
            "unknown_spi": self.unknown_spi_drops,
            "policy_mismatch": self.policy_mismatch_drops,
        }

    # -- the in-process datagram channel ---------------------------------

    def bind(self, address: AddressLike, port: int, handler: DatagramHandler) -> None:
        """Deliver decrypted UDP for (``address``, ``port``) to ``handler``.

        ``handler(payload, (source address, source port))`` runs on the loop
        and must not raise.
        """
        self._handlers[(_packed(address), port)] = handler

    def unbind(self, address: AddressLike, port: int) -> None:
        self._handlers.pop((_packed(address), port), None)

    def send(
        self,
        inner_source: AddressLike,
        inner_destination: AddressLike,
        protocol: int,
        source_port: int,
        destination_port: int,
        payload: bytes,
    ) -> PathDrop | None:
        """Protect one datagram by policy and send it; the drop reason, if any.

        Only UDP is carried (the channel builds the UDP header); tunnel mode
        wraps it in an inner IP header, transport mode checksums it over the
        outer addresses (RFC 3948 §3.1.2).
        """
        if protocol != IPPROTO_UDP:
            raise ValueError("the datagram channel carries UDP only")
        source, destination = _packed(inner_source), _packed(inner_destination)
        key = (IPPROTO_UDP, source, destination, source_port, destination_port)
        entry = self._flows.get(key) or self._lookup(key)
        counters = self.channel_counters
        if isinstance(entry, PathDrop):
            counters.drop(entry)
            return entry
        if entry.tunnel:
            inner = build_udp_packet(
                source, destination, source_port, destination_port, payload
            )
            next_header = IPPROTO_IPIP if len(source) == 4 else IPPROTO_IPV6
        else:
            inner = build_udp(
                entry.local, entry.remote, source_port, destination_port, payload
            )
            next_header = IPPROTO_UDP
        drop = self._seal_and_send(entry, inner, next_header)
        if drop is not None:
            counters.drop(drop)
            return drop
        counters.packets_out += 1
        counters.bytes_out += len(payload)
        return None

    # -- outbound ---------------------------------------------------------

    def _lookup(self, key: tuple[int, bytes, bytes, int, int]) -> _Outbound | PathDrop:
        policy = self._policies.lookup(*key)
        result: _Outbound | PathDrop
        if policy is None:
            result = PathDrop.NO_POLICY
        elif policy.action is Action.DISCARD:
            result = PathDrop.DISCARD
        elif policy.action is Action.BYPASS:
            result = PathDrop.BYPASS_REFUSED
        else:
            result = self._outbound.get(policy.spi or 0, PathDrop.NO_SA)
        if len(self._flows) >= _FLOW_CACHE_LIMIT:
            self._flows.clear()
        self._flows[key] = result
        return result

    def _seal_and_send(
        self, entry: _Outbound, inner: bytes, next_header: int
    ) -> PathDrop | None:
        try:
            esp = entry.sa.seal(inner, next_header, self.loop.time())
        except SAExpired:
            return PathDrop.SA_EXPIRED
        sender = entry.sender
        if isinstance(sender, UdpEncapSocket):
            sender.send_esp(esp, entry.peer)
        else:
            sender.send_payload(esp, entry.peer[0])
        return None

    def _on_tun_packet(self, packet: bytes) -> None:
        tun = self._tun
        flow = parse_flow(packet)
        if flow is None or tun is None:
            if tun is not None:
                tun.counters.drop(PathDrop.MALFORMED)
            return
        key = (
            flow.protocol, flow.source, flow.destination,
            flow.source_port, flow.destination_port,
        )  # fmt: skip
        entry = self._flows.get(key) or self._lookup(key)
        if isinstance(entry, PathDrop):
            tun.counters.drop(entry)
            return
        next_header = IPPROTO_IPIP if flow.version == 4 else IPPROTO_IPV6
        drop = self._seal_and_send(entry, packet, next_header)
        if drop is not None:
            tun.counters.drop(drop)

    # -- inbound ----------------------------------------------------------

    def _on_esp(self, esp: bytes, address: Address) -> None:
        entry = self._inbound.get(int.from_bytes(esp[:4], "big"))
        if entry is None:
            self.unknown_spi_drops += 1
            return
        result = entry.sa.open(esp, self.loop.time())
        if isinstance(result, Drop):
            return
        self._deliver(entry, result.next_header, result.payload, address)

    def _on_raw(self, raw: RawIpSocket, packet: bytes, address: Address) -> None:
        offset = (packet[0] & 0x0F) * 4 if raw.includes_ip_header and packet else 0
        if len(packet) < offset + 8:
            raw.counters.drop(PathDrop.MALFORMED)
            return
        self._on_esp(packet[offset:], address)

    def _deliver(
        self, entry: _Inbound, next_header: int, payload: bytes, address: Address
    ) -> None:
        if entry.tunnel:
            if next_header not in (IPPROTO_IPIP, IPPROTO_IPV6):
                self._mismatch(entry)
                return
            self._deliver_tunnelled(entry, payload)
        elif next_header == IPPROTO_UDP:
            self._deliver_transport(entry, payload)
        else:
            self._mismatch(entry)

    def _deliver_tunnelled(self, entry: _Inbound, packet: bytes) -> None:
        flow = parse_flow(packet)
        if flow is None or not _covered(entry.selectors, flow):
            self._mismatch(entry)
            return

        # The channel claims datagrams addressed to a bound (address, port);
        # everything else goes to the TUN, if there is one.
        if flow.protocol == IPPROTO_UDP:
            handler = self._handlers.get((flow.destination, flow.destination_port))
            if handler is not None:
                udp = parse_udp(packet, flow.payload_offset)
                if udp is None:
                    self.channel_counters.drop(PathDrop.MALFORMED)
                    return
                self._hand_over(handler, udp[2], flow.source, udp[0])
                return
        if self._tun is not None:
            self._tun.write(packet)
        else:
            self.channel_counters.drop(PathDrop.NO_HANDLER)

    def _deliver_transport(self, entry: _Inbound, segment: bytes) -> None:
        udp = parse_udp(segment)
        if udp is None:
            self.channel_counters.drop(PathDrop.MALFORMED)
            return
        source_port, destination_port, payload = udp
        flow = Flow(
            4 if len(entry.remote) == 4 else 6, IPPROTO_UDP, entry.remote,
            entry.local, source_port, destination_port, 0,
        )  # fmt: skip
        if not _covered(entry.selectors, flow):
            self._mismatch(entry)
            return
        handler = self._handlers.get((entry.local, destination_port))
        if handler is None:
            self.channel_counters.drop(PathDrop.NO_HANDLER)
            return
        self._hand_over(handler, payload, entry.remote, source_port)

    def _hand_over(
        self, handler: DatagramHandler, payload: bytes, source: bytes, port: int
    ) -> None:
        counters = self.channel_counters
        counters.packets_in += 1
        counters.bytes_in += len(payload)
        family = socket.AF_INET if len(source) == 4 else socket.AF_INET6
        handler(payload, (socket.inet_ntop(family, source), port))

    def _mismatch(self, entry: _Inbound) -> None:
        # RFC 4301 §5.2 step 4: decrypted traffic outside the SA's selectors
        # is discarded; the engine keeps the per-SA count.
        entry.sa.counters.drops[DropReason.POLICY_MISMATCH] += 1
        self.policy_mismatch_drops += 1

    # -- SA installation helpers -----------------------------------------

    def _add_inbound(
        self, config: SAConfig, now: float, local: AddressLike | None
    ) -> None:
        if config.spi in self._inbound:
            raise DuplicateSA(config.spi)
        local_address = local if local is not None else config.tunnel_destination
        remote_address = config.tunnel_source
        self._inbound[config.spi] = _Inbound(
            InboundSA(config, now),
            config.mode is Mode.TUNNEL,
            _packed(local_address) if local_address is not None else b"",
            _packed(remote_address) if remote_address is not None else b"",
        )
        self._reserved_spis.discard(config.spi)

    def _add_outbound(
        self,
        config: SAConfig,
        now: float,
        transport: Transport,
        peer: AddressLike | None,
        peer_port: int,
        local: AddressLike | None,
    ) -> None:
        if config.spi in self._outbound:
            raise DuplicateSA(config.spi)
        remote = peer if peer is not None else config.tunnel_destination
        local_address = local if local is not None else config.tunnel_source
        if remote is None or local_address is None:
            raise DataPlaneError("an outbound SA needs its peer and local address")
        self._outbound[config.spi] = _Outbound(
            sa=OutboundSA(config, now),
            transport=transport,
            peer=(str(remote), peer_port)
            if transport is Transport.UDP
            else (str(remote),),
            tunnel=config.mode is Mode.TUNNEL,
            local=_packed(local_address),
            remote=_packed(remote),
            sender=self._sender_for(transport, str(local_address), config.protocol),
        )

    def _sender_for(
        self, transport: Transport, local: str, protocol: Protocol
    ) -> UdpEncapSocket | RawIpSocket:
        if transport is Transport.UDP:
            encap = self._encap.get(local) or self._encap.get(
                "::" if ":" in local else "0.0.0.0"
            )
            if encap is None:
                raise DataPlaneError(f"no UDP encapsulation socket for {local}")
            return encap
        raw = self._raw.get((local, int(protocol))) or self._raw.get(
            ("::" if ":" in local else "0.0.0.0", int(protocol))
        )
        if raw is None:
            raise DataPlaneError(f"no raw {protocol.name} socket for {local}")
        return raw

    def _install_ike_handler(self, host: str, encap: UdpEncapSocket) -> None:
        handler = self._ike_handler
        if handler is None:
            encap.set_ike_handler(None)
            return
        local = encap.local_address
        encap.set_ike_handler(lambda message, remote: handler(message, local, remote))

    def _check_lifetimes(self) -> None:
        now = self.loop.time()
        entries: list[_Inbound | _Outbound] = [
            *self._inbound.values(), *self._outbound.values()
        ]  # fmt: skip
        for entry in entries:
            entry.sa.check_lifetime(now)
            event = entry.sa.next_event()
            while event is not None:
                if self._on_lifetime_event is not None:
                    self._on_lifetime_event(event)
                event = entry.sa.next_event()
        self._lifetime_timer = self.loop.call_later(
            _LIFETIME_TICK, self._check_lifetimes
        )


def _covered(selectors: list[TrafficSelector], flow: Flow) -> bool:
    for selector in selectors:
        if selector.matches(
            flow.protocol, flow.source, flow.destination,
            flow.source_port, flow.destination_port,
        ):  # fmt: skip
            return True
    return False


def _packed(address: AddressLike) -> bytes:
    if isinstance(address, str):
        return ip_address(address).packed
    return address.packed


def _sa_stats(counters: SACounters) -> dict[str, Any]:
    return {
        "packets": counters.packets,
        "bytes": counters.bytes,
        "drops": {r.name.lower(): n for r, n in counters.drops.items() if n},
    }
