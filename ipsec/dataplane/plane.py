"""The data plane: SAs and policies installed by IKE, packets moved by asyncio.

:class:`DataPlane` is the narrow interface the IKE daemon uses, modelled on a
kernel's IPsec interface (get_spi, add_sa, update_sa, del_sa, add_policy,
del_policy, counters), and the dispatcher between the transports (UDP
encapsulation, raw ESP/AH), the sans-IO engine (ipsec.esp) and the consumers
of cleartext (the in-process channel and the TUN gateway).

Outbound: a packet's selector fields pick an SPD entry; PROTECT seals it with
that entry's SA and sends it, DISCARD, BYPASS (on these protected paths) and
a missing entry drop it, counted and never sent in clear. Inbound: the SPI
picks the SA, the engine verifies and decrypts, and the inner packet must
match the inbound policy of that very SA (RFC 4301 §5.2) before it reaches a
handler or the TUN. An SA installed as the successor of another (a CHILD_SA
rekey) shares its predecessor's lineage: a policy naming either admits both,
so packets still in flight on the old SA pass while the new one's policy
already comes first (make-before-break, RFC 7296 §2.8).

An outbound packet that only a TRAP entry covers is dropped, counted as
``trapped``, and handed as an :class:`Acquire` to the handler set with
:meth:`DataPlane.set_acquire_handler` (the IKE daemon), every such packet:
the handler decides when a negotiation is already under way. Dropping
rather than queueing keeps the data plane free of per-flow buffers; the
first datagrams of a flow are lost until its CHILD_SA is up.

Both directions keep a per-flow cache in front of the SPD, emptied on every
SA or policy change, so the ordered policy scan runs once per flow.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from ipsec.esp import (
    Drop,
    DropReason,
    InboundSA,
    LifetimeEvent,
    MalformedPacket,
    Mode,
    OutboundSA,
    Protocol,
    SAConfig,
    SACounters,
    SAExpired,
)
from ipsec.esp.keylog import EspKeyLog
from ipsec.esp.sad import SADatabase
from ipsec.esp.spd import (
    DEFAULT_POLICY,
    Direction,
    Policy,
    PolicyAction,
    SecurityPolicyDatabase,
    TrafficSelector,
)

from .counters import PathCounters, PathDrop
from .errors import DataPlaneError, DuplicateSA, UnknownSA
from .packet import (
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_UDP,
    build_ip,
    build_udp,
    build_udp_packet,
    parse_flow,
    parse_udp,
)
from .raw import RawIpSocket
from .tun import TunDevice
from .udp_encap import IKE_PORT_NAT_T, UdpEncapSocket

logger = logging.getLogger("ipsec.dataplane")

IPAddress = IPv4Address | IPv6Address
AddressLike = IPv4Address | IPv6Address | str
Address = tuple[Any, ...]
DatagramHandler = Callable[[bytes, tuple[str, int]], None]
LifetimeHandler = Callable[[LifetimeEvent], None]
IkeHandler = Callable[[bytes, Address, Address], None]
AcquireHandler = Callable[["Acquire"], None]
FlowKey = tuple[int, bytes, bytes, int, int]
_Route = tuple[DatagramHandler | None, tuple[str, int]]
_UNKNOWN: Any = object()
_IPV4_UDP_FIELDS = struct.Struct("!H2xH16xH")
_PORTS = struct.Struct("!HH")

_LIFETIME_TICK = 1.0
_FLOW_CACHE_LIMIT = 8192
_MINIMUM_SPI = 256


class Transport(enum.Enum):
    """How an SA's packets travel between the peers."""

    UDP = "udp"
    """ESP in UDP (RFC 3948), the default: crosses NAT, needs no privilege."""
    RAW = "raw"
    """ESP or AH straight over IP (protocol 50/51), needs CAP_NET_RAW."""


@dataclass(frozen=True, slots=True)
class Acquire:
    """An outbound packet hit a TRAP policy: an SA for it is wanted."""

    policy: Policy
    protocol: int
    source: IPAddress
    destination: IPAddress
    source_port: int
    destination_port: int


@dataclass(slots=True)
class _Outbound:
    sa: OutboundSA
    sender: UdpEncapSocket | RawIpSocket
    peer: Address
    """(address, port) for UDP, (address,) for raw."""
    tunnel: bool
    local: bytes
    remote: bytes
    """Outer addresses, packed: transport mode's UDP checksum covers them."""


@dataclass(slots=True)
class _Inbound:
    sa: InboundSA
    tunnel: bool
    local: IPAddress | None
    remote: IPAddress | None
    """This end's and the peer's address: transport mode's inner addresses."""
    lineage: int
    """The inbound SPI of the first SA of this CHILD_SA: rekeys inherit it."""
    routes: dict[bytes, _Route | None] = field(default_factory=dict)
    """IPv4 UDP flows (source, destination, ports as packed) to handlers."""
    routes_generation: int = 0
    """The plane's generation ``routes`` was filled in: older means stale."""


class DataPlane:
    """SAs, policies and the packet paths between them, on one event loop.

    ``on_lifetime_event`` receives the engine's Soft/HardLifetimeReached
    events; SAs are polled every ``lifetime_interval`` seconds (one by
    default), so an idle SA expires on time too. ``spi_source`` draws SPI
    candidates (default: the secrets module). Installed SAs go to a
    Wireshark key log only when ``keylog`` is given (from a CLI argument) or
    SBC_IPSEC_KEYLOG names a file.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        on_lifetime_event: LifetimeHandler | None = None,
        spi_source: Callable[[], int] | None = None,
        lifetime_interval: float = _LIFETIME_TICK,
        keylog: EspKeyLog | None = None,
    ) -> None:
        self.loop = loop
        self.channel_counters = PathCounters()
        self.sad = SADatabase()
        self.spd = SecurityPolicyDatabase()
        self._outbound: dict[int, _Outbound] = {}
        self._inbound: dict[int, _Inbound] = {}
        # The same, keyed by the SPI as it appears on the wire.
        self._inbound_by_wire: dict[bytes, _Inbound] = {}
        self._time = loop.time
        self._reserved_spis: set[int] = set()
        self._flows: dict[FlowKey, _Outbound | PathDrop] = {}
        self._generation = 0
        self._admissions: dict[tuple[int, FlowKey], bool] = {}
        self._handlers: dict[tuple[bytes, int], DatagramHandler] = {}
        self._encap: dict[str, UdpEncapSocket] = {}
        self._raw: dict[tuple[str, int], RawIpSocket] = {}
        self._tun: TunDevice | None = None
        self._on_lifetime_event = on_lifetime_event
        self._spi_source = spi_source or (lambda: secrets.randbits(32))
        self._ike_handler: IkeHandler | None = None
        self._acquire_handler: AcquireHandler | None = None
        self._lifetime_interval = lifetime_interval
        self._keylog = keylog or EspKeyLog.from_environment()
        self._lifetime_timer = loop.call_later(lifetime_interval, self._check_lifetimes)

    # -- transports ---------------------------------------------------------

    def open_udp_encap(
        self, host: str = "0.0.0.0", port: int = IKE_PORT_NAT_T, **options: Any
    ) -> UdpEncapSocket:
        """Open the RFC 3948 socket of one local address (shared with IKE)."""
        if host in self._encap:
            raise DataPlaneError(f"a UDP encapsulation socket on {host} exists")
        encap = UdpEncapSocket.open(self.loop, self._on_esp, host, port, **options)
        self._encap[host] = encap
        self._install_ike_handler(encap)
        return encap

    def open_raw(self, protocol: Protocol, host: str = "0.0.0.0") -> RawIpSocket:
        """Open a raw socket for ESP or AH on ``host`` (needs CAP_NET_RAW)."""
        key = (host, int(protocol))
        if protocol is Protocol.AH and ":" in host:
            # An IPv6 raw socket strips the IPv6 header, which AH's ICV covers.
            raise DataPlaneError("AH over IPv6 raw sockets is not supported")
        if key not in self._raw:

            def on_packet(packet: bytes, _address: Address) -> None:
                self._on_raw(raw, packet)

            raw = RawIpSocket.open(self.loop, int(protocol), on_packet, host)
            self._raw[key] = raw
        return self._raw[key]

    def attach_tun(self, tun: TunDevice) -> None:
        """Protect what the kernel routes into ``tun``; write decrypted back."""
        self._tun = tun
        tun.attach(self.loop, self._on_tun_packet)
        self._forget_flows()

    def set_ike_handler(self, handler: IkeHandler | None) -> None:
        """``handler(message, local, remote)`` for IKE on every encap socket."""
        self._ike_handler = handler
        for encap in self._encap.values():
            self._install_ike_handler(encap)

    def set_acquire_handler(self, handler: AcquireHandler | None) -> None:
        """``handler(acquire)`` for each outbound packet a TRAP policy drops;
        it runs on the loop, inside the send, and must not raise."""
        self._acquire_handler = handler

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

    # -- the kernel-like SA and policy interface ----------------------------

    def get_spi(self) -> int:
        """Reserve a fresh inbound SPI (RFC 4303 §2.1: 256 and up)."""
        for _ in range(64):
            spi = self._spi_source() & 0xFFFFFFFF
            taken = spi in self._inbound or spi in self._reserved_spis
            if spi >= _MINIMUM_SPI and not taken:
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
        replaces: int | None = None,
    ) -> None:
        """Install one direction of a CHILD_SA.

        ``peer`` is the other end's outer address: where outbound packets
        go, and where inbound transport-mode packets come from (default: the
        SA's tunnel addresses; inbound, else the datagram's source).
        ``local`` is this end's (default: the tunnel source outbound, the
        tunnel destination inbound). ``replaces`` names the inbound SA a
        rekeyed inbound SA succeeds: until that one is deleted, the inbound
        policies of either admit traffic on both.
        """
        now = self.loop.time()
        if inbound:
            self._add_inbound(config, now, local, peer, replaces)
        else:
            self._add_outbound(config, now, transport, peer, peer_port, local)
        self._forget_flows()
        # SPI, direction and transforms only: never key material.
        logger.debug(
            "SA 0x%08x installed %s (%s %s %s, %s)", config.spi,
            "inbound" if inbound else "outbound", config.protocol.name,
            config.mode.value, config.encryption.name, transport.value,
        )  # fmt: skip

    def update_sa(
        self, spi: int, *, peer: AddressLike | None = None, peer_port: int | None = None
    ) -> None:
        """Move an outbound SA to a new peer address or port (NAT rebinding)."""
        entry = self._outbound.get(spi)
        if entry is None:
            raise UnknownSA(spi)
        address = str(peer) if peer is not None else entry.peer[0]
        if isinstance(entry.sender, UdpEncapSocket):
            entry.peer = (address, peer_port or entry.peer[1])
        else:
            entry.peer = (address,)
            entry.remote = ip_address(address).packed

    def del_sa(self, spi: int, *, inbound: bool) -> None:
        """Remove one direction of a CHILD_SA; its policies stay until removed."""
        if inbound:
            if self._inbound.pop(spi, None) is None:
                raise UnknownSA(spi)
            del self._inbound_by_wire[spi.to_bytes(4, "big")]
            self.sad.remove(spi)
        elif self._outbound.pop(spi, None) is None:
            raise UnknownSA(spi)
        self._forget_flows()
        logger.debug(
            "SA 0x%08x removed (%s)", spi, "inbound" if inbound else "outbound"
        )

    def add_policy(
        self,
        local: TrafficSelector,
        remote: TrafficSelector,
        spi: int | None = None,
        *,
        direction: Direction = Direction.OUTBOUND,
        action: PolicyAction = PolicyAction.PROTECT,
        index: int | None = None,
    ) -> Policy:
        """Add an SPD entry (first match wins; ``index`` 0 puts it first).

        Outbound PROTECT names the SA to use; inbound PROTECT the SA the
        traffic must have arrived on.
        """
        policy = self.spd.add(local, remote, action, spi, direction, index)
        self._forget_flows()
        return policy

    def del_policy(self, policy: Policy) -> None:
        """Remove an SPD entry that :meth:`add_policy` returned."""
        self.spd.remove(policy)
        self._forget_flows()

    def counters(self, spi: int, *, inbound: bool | None = None) -> SACounters:
        """The engine's live counters of an SA (inbound first when ambiguous)."""
        if inbound is not False and spi in self._inbound:
            return self._inbound[spi].sa.counters
        if inbound is not True and spi in self._outbound:
            return self._outbound[spi].sa.counters
        raise UnknownSA(spi)

    def stats(self) -> dict[str, Any]:
        """Per-path, per-SA and per-reason counters, for the admin plane."""
        paths = {
            f"udp:{host}": e.counters.snapshot() for host, e in self._encap.items()
        }
        for (host, protocol), raw in self._raw.items():
            paths[f"raw:{host}:{protocol}"] = raw.counters.snapshot()
        if self._tun is not None:
            paths["tun"] = self._tun.counters.snapshot()
        paths["channel"] = self.channel_counters.snapshot()
        return {
            "paths": paths,
            "inbound": {
                spi: _sa_stats(e.sa.counters) for spi, e in self._inbound.items()
            },
            "outbound": {
                spi: _sa_stats(e.sa.counters) for spi, e in self._outbound.items()
            },
            "before_sa": {r.name.lower(): n for r, n in self.sad.drops.items() if n},
        }

    # -- the in-process datagram channel ------------------------------------

    def bind(self, address: AddressLike, port: int, handler: DatagramHandler) -> None:
        """Deliver decrypted UDP for (``address``, ``port``) to ``handler``.

        ``handler(payload, (source address, source port))`` runs on the loop
        and must not raise.
        """
        self._handlers[(_packed(address), port)] = handler
        self._forget_flows()

    def unbind(self, address: AddressLike, port: int) -> None:
        self._handlers.pop((_packed(address), port), None)
        self._forget_flows()

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

        Only UDP is carried (the channel builds the UDP header). Tunnel mode
        wraps it in an inner IP header; transport mode checksums it over the
        outer addresses, which are its addresses (RFC 3948 §3.1.2).
        """
        if protocol != IPPROTO_UDP:
            raise ValueError("the datagram channel carries UDP only")
        source, destination = _packed(inner_source), _packed(inner_destination)
        key = (IPPROTO_UDP, source, destination, source_port, destination_port)
        entry = self._flows.get(key) or self._lookup(key)
        counters = self.channel_counters
        if isinstance(entry, PathDrop):
            counters.drop(entry)
            if entry is PathDrop.TRAPPED:
                self._acquire(key)
            return entry
        if entry.tunnel:
            inner = build_udp_packet(
                source, destination, source_port, destination_port, payload
            )
        else:
            inner = build_udp(
                entry.local, entry.remote, source_port, destination_port, payload
            )
        drop = self._protect_and_send(entry, inner)
        if drop is not None:
            counters.drop(drop)
            return drop
        counters.packets_out += 1
        counters.bytes_out += len(payload)
        return None

    # -- outbound ------------------------------------------------------------

    def _lookup(self, key: FlowKey) -> _Outbound | PathDrop:
        protocol, source, destination, source_port, destination_port = key
        policy = self.spd.lookup(
            ip_address(source), ip_address(destination), protocol,
            source_port, destination_port,
        )  # fmt: skip
        result: _Outbound | PathDrop
        if policy is DEFAULT_POLICY:
            result = PathDrop.NO_POLICY
        elif policy.action is PolicyAction.DISCARD:
            result = PathDrop.DISCARD
        elif policy.action is PolicyAction.BYPASS:
            result = PathDrop.BYPASS_REFUSED
        elif policy.action is PolicyAction.TRAP:
            result = PathDrop.TRAPPED
        else:
            result = self._outbound.get(policy.spi or 0, PathDrop.NO_SA)
        if len(self._flows) >= _FLOW_CACHE_LIMIT:
            self._flows.clear()
        self._flows[key] = result
        return result

    def _acquire(self, key: FlowKey) -> None:
        handler = self._acquire_handler
        if handler is None:
            return
        protocol, source, destination, source_port, destination_port = key
        source_address = ip_address(source)
        destination_address = ip_address(destination)
        policy = self.spd.lookup(
            source_address, destination_address, protocol,
            source_port, destination_port,
        )  # fmt: skip
        handler(
            Acquire(
                policy, protocol, source_address, destination_address,
                source_port, destination_port,
            )
        )  # fmt: skip

    def _protect_and_send(self, entry: _Outbound, inner: bytes) -> PathDrop | None:
        """Seal (UDP) or protect (raw) ``inner``: an IP packet in tunnel mode,
        a UDP segment in transport mode."""
        sender, now = entry.sender, self.loop.time()
        try:
            if isinstance(sender, UdpEncapSocket):
                if entry.tunnel:
                    version = inner[0] >> 4
                    next_header = IPPROTO_IPIP if version == 4 else IPPROTO_IPV6
                else:
                    next_header = IPPROTO_UDP
                sender.send_esp(entry.sa.seal(inner, next_header, now), entry.peer)
                return None
            if not entry.tunnel:
                inner = build_ip(entry.local, entry.remote, IPPROTO_UDP, inner)
            sender.send_packet(entry.sa.protect(inner, now), entry.peer[0])
        except SAExpired:
            return PathDrop.SA_EXPIRED
        except MalformedPacket:
            return PathDrop.MALFORMED
        return None

    def _on_tun_packet(self, packet: bytes) -> None:
        tun = self._tun
        if tun is None:
            return
        flow = parse_flow(packet)
        if flow is None:
            tun.counters.drop(PathDrop.MALFORMED)
            return
        key = (
            flow.protocol, flow.source, flow.destination,
            flow.source_port, flow.destination_port,
        )  # fmt: skip
        entry = self._flows.get(key) or self._lookup(key)
        if isinstance(entry, PathDrop):
            tun.counters.drop(entry)
            if entry is PathDrop.TRAPPED:
                self._acquire(key)
            return
        if not entry.tunnel:
            # Transport-mode SAs carry this host's own traffic, never a LAN's.
            tun.counters.drop(PathDrop.NO_SA)
            return
        drop = self._protect_and_send(entry, packet)
        if drop is not None:
            tun.counters.drop(drop)

    # -- inbound -------------------------------------------------------------

    def _on_esp(self, esp: bytes, address: Address) -> None:
        entry = self._inbound_by_wire.get(esp[:4])
        if entry is None:
            # The SAD counts what no SA can (unknown SPI, truncated header).
            self.sad.open(esp, self._time())
            return
        result = entry.sa.open(esp, self._time())
        if isinstance(result, Drop):
            return
        next_header, payload = result.next_header, result.payload
        if entry.tunnel and next_header in (IPPROTO_IPIP, IPPROTO_IPV6):
            self._deliver_packet(entry, payload)
        elif not entry.tunnel and next_header == IPPROTO_UDP:
            self._deliver_segment(entry, payload, address)
        else:
            entry.sa.count_drop(DropReason.POLICY_MISMATCH)

    def _on_raw(self, raw: RawIpSocket, packet: bytes) -> None:
        if not raw.includes_ip_header:
            # IPv6 raw sockets strip the header; ESP needs none (AH does).
            if len(packet) < 8:
                raw.counters.drop(PathDrop.MALFORMED)
                return
            self._on_esp(packet, ())
            return
        result = self.sad.unprotect(packet, self.loop.time())
        if isinstance(result, Drop):
            return
        entry = self._inbound[_spi_of(packet, raw.protocol)]
        expected = (IPPROTO_IPIP, IPPROTO_IPV6) if entry.tunnel else (IPPROTO_UDP,)
        if result.next_header in expected:
            self._deliver_packet(entry, result.packet)
        else:
            entry.sa.count_drop(DropReason.POLICY_MISMATCH)

    def _deliver_packet(self, entry: _Inbound, packet: bytes) -> None:
        """An IP packet out of an SA: the tunnel's inner one, or transport's."""
        # Fast path for the common case, IPv4 UDP (RTP, SIP) to a bound
        # handler or the TUN: a header check and one lookup of a per-SA
        # route cache keyed by the addresses and ports as they sit in the
        # packet.
        if len(packet) >= 28 and packet[0] == 0x45 and packet[9] == IPPROTO_UDP:
            total, fragment, length = _IPV4_UDP_FIELDS.unpack_from(packet, 2)
            if (
                total == len(packet)
                and not fragment & 0x3FFF
                and 8 <= length <= total - 20
            ):
                flow = packet[12:24]
                if entry.routes_generation != self._generation:
                    entry.routes.clear()
                    entry.routes_generation = self._generation
                route = entry.routes.get(flow, _UNKNOWN)
                if route is _UNKNOWN:
                    route = self._route(entry, flow)
                if route is not None:
                    handler, source = route
                    if handler is None:
                        if self._tun is not None:
                            self._tun.write(packet)
                        return
                    counters = self.channel_counters
                    counters.packets_in += 1
                    counters.bytes_in += length - 8
                    handler(packet[28 : 20 + length], source)
                    return
        self._deliver_general(entry, packet)

    def _route(self, entry: _Inbound, flow: bytes) -> _Route | None:
        """Cache where an admitted IPv4 UDP flow on ``entry`` goes: to a
        handler, or (handler None) to the TUN; None for the general path."""
        source, destination = flow[:4], flow[4:8]
        source_port, destination_port = _PORTS.unpack_from(flow, 8)
        handler = self._handlers.get((destination, destination_port))
        route: _Route | None = None
        key = (IPPROTO_UDP, source, destination, source_port, destination_port)
        to_tun = handler is None and self._tun is not None and entry.tunnel
        if (handler is not None or to_tun) and self._admitted(entry, key):
            route = (handler, (_address_text(source), source_port))
        if len(entry.routes) >= _FLOW_CACHE_LIMIT:
            entry.routes.clear()
        entry.routes[flow] = route
        return route

    def _deliver_general(self, entry: _Inbound, packet: bytes) -> None:
        flow = parse_flow(packet)
        if flow is None:
            entry.sa.count_drop(DropReason.MALFORMED)
            return
        key = (
            flow.protocol, flow.source, flow.destination,
            flow.source_port, flow.destination_port,
        )  # fmt: skip
        if not self._admits(entry, key):
            return

        # The channel claims UDP addressed to a bound (address, port);
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
        if self._tun is not None and entry.tunnel:
            self._tun.write(packet)
        else:
            self.channel_counters.drop(PathDrop.NO_HANDLER)

    def _deliver_segment(
        self, entry: _Inbound, segment: bytes, address: Address
    ) -> None:
        """A transport-mode UDP segment that arrived without its IP header.

        Its addresses are the SA's; when the peer's was not given, the outer
        source the datagram came from stands in for it.
        """
        udp = parse_udp(segment)
        if udp is None or entry.local is None or not (entry.remote or address):
            entry.sa.count_drop(DropReason.MALFORMED)
            return
        source_port, destination_port, payload = udp
        remote = entry.remote.packed if entry.remote else _packed(address[0])
        local = entry.local.packed
        key = (IPPROTO_UDP, remote, local, source_port, destination_port)
        if not self._admits(entry, key):
            return
        handler = self._handlers.get((local, destination_port))
        if handler is None:
            self.channel_counters.drop(PathDrop.NO_HANDLER)
            return
        self._hand_over(handler, payload, remote, source_port)

    def _admits(self, entry: _Inbound, key: FlowKey) -> bool:
        """Whether the flow may use this SA; a refusal is counted on the SA."""
        if self._admitted(entry, key):
            return True
        entry.sa.count_drop(DropReason.POLICY_MISMATCH)
        return False

    def _admitted(self, entry: _Inbound, key: FlowKey) -> bool:
        # RFC 4301 §5.2 step 4: the inbound policy matching the inner packet
        # must name the SA it arrived on. Cached per (SA, flow).
        spi = entry.sa.spi
        admitted = self._admissions.get((spi, key))
        if admitted is None:
            protocol, source, destination, source_port, destination_port = key
            policy = self.spd.lookup(
                ip_address(source), ip_address(destination), protocol,
                source_port, destination_port, Direction.INBOUND,
            )  # fmt: skip
            admitted = policy.action is PolicyAction.PROTECT and (
                policy.spi == spi or self._same_lineage(entry, policy.spi)
            )
            if len(self._admissions) >= _FLOW_CACHE_LIMIT:
                self._admissions.clear()
            self._admissions[(spi, key)] = admitted
        return admitted

    def _same_lineage(self, entry: _Inbound, spi: int | None) -> bool:
        named = self._inbound.get(spi) if spi is not None else None
        return named is not None and named.lineage == entry.lineage

    def _hand_over(
        self, handler: DatagramHandler, payload: bytes, source: bytes, port: int
    ) -> None:
        counters = self.channel_counters
        counters.packets_in += 1
        counters.bytes_in += len(payload)
        handler(payload, (_address_text(source), port))

    # -- installation helpers ------------------------------------------------

    def _add_inbound(
        self,
        config: SAConfig,
        now: float,
        local: AddressLike | None,
        peer: AddressLike | None,
        replaces: int | None,
    ) -> None:
        if config.spi in self._inbound:
            raise DuplicateSA(config.spi)
        predecessor = self._inbound.get(replaces) if replaces is not None else None
        lineage = predecessor.lineage if predecessor is not None else config.spi
        sa = InboundSA(config, now)
        self.sad.add(sa)
        local_address = (
            ip_address(local) if local is not None else config.tunnel_destination
        )
        remote = ip_address(peer) if peer is not None else config.tunnel_source
        tunnel = config.mode is Mode.TUNNEL
        entry = _Inbound(sa, tunnel, local_address, remote, lineage)
        self._inbound[config.spi] = entry
        self._inbound_by_wire[config.spi.to_bytes(4, "big")] = entry
        self._reserved_spis.discard(config.spi)
        if self._keylog is not None and remote and local_address:
            self._keylog.log(config, remote, local_address)

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
        udp = transport is Transport.UDP
        self._outbound[config.spi] = _Outbound(
            sa=OutboundSA(config, now),
            sender=self._sender_for(transport, str(local_address), config.protocol),
            peer=(str(remote), peer_port) if udp else (str(remote),),
            tunnel=config.mode is Mode.TUNNEL,
            local=_packed(local_address),
            remote=_packed(remote),
        )
        if self._keylog is not None:
            self._keylog.log(config, ip_address(local_address), ip_address(remote))

    def _sender_for(
        self, transport: Transport, local: str, protocol: Protocol
    ) -> UdpEncapSocket | RawIpSocket:
        wildcard = "::" if ":" in local else "0.0.0.0"
        if transport is Transport.UDP:
            if protocol is not Protocol.ESP:
                raise DataPlaneError("only ESP travels in UDP (RFC 3948)")
            encap = self._encap.get(local) or self._encap.get(wildcard)
            if encap is None:
                raise DataPlaneError(f"no UDP encapsulation socket for {local}")
            return encap
        raw = self._raw.get((local, int(protocol))) or self._raw.get(
            (wildcard, int(protocol))
        )
        if raw is None:
            raise DataPlaneError(f"no raw {protocol.name} socket for {local}")
        return raw

    def _install_ike_handler(self, encap: UdpEncapSocket) -> None:
        handler = self._ike_handler
        if handler is None:
            encap.set_ike_handler(None)
            return
        local = encap.local_address
        encap.set_ike_handler(lambda message, remote: handler(message, local, remote))

    def _forget_flows(self) -> None:
        self._flows.clear()
        self._admissions.clear()
        # Each inbound SA drops its route cache when it next sees a packet:
        # clearing all of them here cost every setup a walk over every SA.
        self._generation += 1

    def _check_lifetimes(self) -> None:
        now = self.loop.time()
        sas: list[InboundSA | OutboundSA] = [e.sa for e in self._inbound.values()]
        sas += [e.sa for e in self._outbound.values()]
        for sa in sas:
            sa.check_lifetime(now)
            event = sa.next_event()
            while event is not None:
                if self._on_lifetime_event is not None:
                    self._on_lifetime_event(event)
                event = sa.next_event()
        self._lifetime_timer = self.loop.call_later(
            self._lifetime_interval, self._check_lifetimes
        )


def _spi_of(packet: bytes, protocol: int) -> int:
    # Only called after the SAD found the SA, so the header is known sound:
    # the SPI is first in ESP and at offset 4 in AH (RFC 4302 §2).
    offset = (packet[0] & 0x0F) * 4 + (4 if protocol == Protocol.AH else 0)
    return int.from_bytes(packet[offset : offset + 4], "big")


_packed_addresses: dict[AddressLike, bytes] = {}
_address_texts: dict[bytes, str] = {}


def _address_text(packed: bytes) -> str:
    text = _address_texts.get(packed)
    if text is None:
        family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
        text = socket.inet_ntop(family, packed)
        if len(_address_texts) >= _FLOW_CACHE_LIMIT:
            _address_texts.clear()
        _address_texts[packed] = text
    return text


def _packed(address: AddressLike) -> bytes:
    # Callers pass the same few addresses over and over; parsing a string
    # costs more than sealing a small packet, so remember the answers.
    packed = _packed_addresses.get(address)
    if packed is None:
        packed = (
            ip_address(address).packed if isinstance(address, str) else address.packed
        )
        if len(_packed_addresses) >= _FLOW_CACHE_LIMIT:
            _packed_addresses.clear()
        _packed_addresses[address] = packed
    return packed


def _sa_stats(counters: SACounters) -> dict[str, Any]:
    return {
        "packets": counters.packets,
        "bytes": counters.bytes,
        "drops": {r.name.lower(): n for r, n in counters.drops.items() if n},
    }
