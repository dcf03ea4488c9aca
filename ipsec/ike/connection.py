"""Connection definitions the daemon runs, in the spirit of swanctl.conf.

A connection names the two peers (addresses, identities, the PSK), the IKE
proposals and one child: its traffic selectors, mode and ESP proposals.
Proposals are written as strongSwan writes them (``aes128gcm16-prfsha256-
x25519``, ``aes256-sha256-modp2048``, ``aes128gcm16-esn``), so a
configuration reads the same on both ends of an interop test.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_network

from ipsec.esp import Encryption, Integrity, Mode, Protocol, SAConfig
from ipsec.esp.spd import TrafficSelector as PolicySelector

from .certificates import CertificateAuthentication
from .config import DpdAction, Identity, IkeSaConfig
from .constants import (
    DhGroup,
    EncrId,
    EsnId,
    IntegId,
    PrfId,
    ProtocolId,
    TransformType,
)
from .events import ChildSaEstablished
from .keymat import PresharedKey
from .payloads import Proposal, TrafficSelector, Transform

IPAddress = IPv4Address | IPv6Address

IKE_PORT = 500
NAT_T_PORT = 4500


class StartAction(enum.Enum):
    """What the daemon does with a connection once it is loaded."""

    NONE = "none"
    """Wait for the peer to initiate."""
    START = "start"
    """Initiate the IKE_SA and its child at once."""
    TRAP = "trap"
    """Install trap policies for the child's selectors; the first outbound
    packet they catch initiates the IKE_SA (or the CHILD_SA, if an IKE_SA
    is up). The traps stay until the connection is unloaded."""


class CloseAction(enum.Enum):
    """What the daemon does when the peer deletes the connection's CHILD_SA
    or IKE_SA (swanctl's ``close_action``); our own deletes change nothing."""

    NONE = "none"
    TRAP = "trap"
    """Install the trap policies, so that the next packet sets it up again."""
    START = "start"
    """Set it up again at once: a CHILD_SA on the same IKE_SA if that lives
    on, else a new IKE_SA."""


@dataclass(frozen=True, slots=True)
class ChildDefinition:
    """The CHILD_SA of a connection, negotiated inside IKE_AUTH."""

    name: str
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    esp_proposals: tuple[Proposal, ...]
    mode: Mode = Mode.TUNNEL
    replay_window: int = 1024
    rekey_time: float | None = None
    """Rekey the CHILD_SA this long after it is set up; None: only on request."""


@dataclass(frozen=True, slots=True)
class ConnectionDefinition:
    """One peer: who it is, how to reach it and what to protect.

    ``remote_address`` None accepts an IKE_SA from anywhere (a responder
    only); the PSK prints as ``<redacted>``.
    """

    name: str
    local_address: IPAddress
    remote_address: IPAddress | None
    local_id: Identity
    remote_id: Identity
    psk: PresharedKey | None
    ike_proposals: tuple[Proposal, ...]
    child: ChildDefinition
    start_action: StartAction = StartAction.NONE
    remote_port: int = IKE_PORT
    """Where IKE_SA_INIT goes when we initiate."""
    remote_nat_t_port: int = NAT_T_PORT
    """Where the IKE_SA floats to after NAT detection (RFC 7296 §2.23)."""
    encap: bool = False
    """Force UDP encapsulation by faking a NAT, as strongSwan's ``encap = yes``."""
    keepalive_interval: float = 20.0
    """NAT keepalives while we are behind a NAT (RFC 3948 §4)."""
    rand_time: float = 0.0
    """Rekeys come up to this many seconds early (strongSwan's rand_time)."""
    ike_rekey_time: float | None = None
    """Rekey the IKE_SA this long after it is set up; None: only on request."""
    dpd_delay: float | None = None
    """Check the peer's liveness after this long without hearing from it."""
    dpd_action: DpdAction = DpdAction.CLEAR
    """CLEAR removes a dead peer's IKE_SA; RESTART also initiates a new one."""
    retransmit_timeout: float = 4.0
    """First retransmission of a request; each next one waits 1.8 times longer."""
    retransmit_tries: int = 5
    fragmentation: bool = True
    """Offer IKE fragmentation (RFC 7383), as strongSwan's ``fragmentation``."""
    fragment_size: int | None = None
    """Largest IP datagram of an IKE fragment; None: 576 (IPv4), 1280 (IPv6)."""
    certificates: CertificateAuthentication | None = None
    """Our certificate and key, and the CAs the peer's must chain to."""
    send_initial_contact: bool = True
    """Put INITIAL_CONTACT in our first IKE_AUTH (RFC 7296 §2.4): the peer
    then drops every other IKE_SA it holds with our identities. Initiators
    that share one identity turn it off, or they would evict each other."""
    close_action: CloseAction = CloseAction.NONE
    reauth_time: float | None = None
    """Reauthenticate this long (less up to ``rand_time``) after the IKE_SA
    is set up: a new IKE_SA with a full IKE_AUTH replaces it, make-before-
    break (RFC 7296 §2.8.3). None: never. An IKE_SA rekey keeps the time."""

    def __post_init__(self) -> None:
        initiates = (
            self.start_action is StartAction.TRAP
            or self.close_action is not CloseAction.NONE
            or self.reauth_time is not None
        )
        if initiates and self.remote_address is None:
            raise ValueError(
                f"connection {self.name}: trap, close_action and reauth_time "
                "initiate, so they need a remote address"
            )

    def ike_sa_config(self) -> IkeSaConfig:
        """The engine's settings for an IKE_SA of this connection."""
        return IkeSaConfig(
            local_id=self.local_id,
            remote_id=self.remote_id,
            psk=self.psk,
            ike_proposals=self.ike_proposals,
            esp_proposals=self.child.esp_proposals,
            local_traffic_selectors=self.child.local_ts,
            remote_traffic_selectors=self.child.remote_ts,
            child_rekey_time=self.child.rekey_time,
            ike_rekey_time=self.ike_rekey_time,
            rand_time=self.rand_time,
            dpd_delay=self.dpd_delay,
            dpd_action=self.dpd_action,
            retransmit_timeout=self.retransmit_timeout,
            retransmit_tries=self.retransmit_tries,
            fragmentation=self.fragmentation,
            fragment_size=self.fragment_size,
            certificates=self.certificates,
            send_initial_contact=self.send_initial_contact,
        )

    def accepts(self, local: IPAddress, remote: IPAddress) -> bool:
        """Whether an IKE_SA_INIT from ``remote`` to ``local`` is for us."""
        return local == self.local_address and self.remote_address in (None, remote)

    def trap_selectors(self) -> list[tuple[PolicySelector, PolicySelector]]:
        """(local, remote) for each trap policy: every pair of the child's
        configured selectors, before any narrowing."""
        child = self.child
        return [
            (_policy_selector(local), _policy_selector(remote))
            for local in child.local_ts
            for remote in child.remote_ts
        ]


# ---------------------------------------------------------------------------
# Proposals written the strongSwan way

_ENCRYPTION = {
    "aes128": (EncrId.ENCR_AES_CBC, 128),
    "aes192": (EncrId.ENCR_AES_CBC, 192),
    "aes256": (EncrId.ENCR_AES_CBC, 256),
    "aes128gcm16": (EncrId.ENCR_AES_GCM_16, 128),
    "aes192gcm16": (EncrId.ENCR_AES_GCM_16, 192),
    "aes256gcm16": (EncrId.ENCR_AES_GCM_16, 256),
    "chacha20poly1305": (EncrId.ENCR_CHACHA20_POLY1305, None),
}
_INTEGRITY = {
    "sha256": IntegId.AUTH_HMAC_SHA2_256_128,
    "sha384": IntegId.AUTH_HMAC_SHA2_384_192,
    "sha512": IntegId.AUTH_HMAC_SHA2_512_256,
}
_PRF = {
    "prfsha256": PrfId.PRF_HMAC_SHA2_256,
    "prfsha384": PrfId.PRF_HMAC_SHA2_384,
    "prfsha512": PrfId.PRF_HMAC_SHA2_512,
}
# An IKE proposal without a PRF takes the one matching its integrity.
_PRF_OF_INTEGRITY = {
    IntegId.AUTH_HMAC_SHA2_256_128: PrfId.PRF_HMAC_SHA2_256,
    IntegId.AUTH_HMAC_SHA2_384_192: PrfId.PRF_HMAC_SHA2_384,
    IntegId.AUTH_HMAC_SHA2_512_256: PrfId.PRF_HMAC_SHA2_512,
}
_DH = {
    "modp2048": DhGroup.MODP_2048,
    "modp3072": DhGroup.MODP_3072,
    "modp4096": DhGroup.MODP_4096,
    "ecp256": DhGroup.ECP_256,
    "ecp384": DhGroup.ECP_384,
    "ecp521": DhGroup.ECP_521,
    "x25519": DhGroup.CURVE25519,
    "curve25519": DhGroup.CURVE25519,
    "x448": DhGroup.CURVE448,
    "curve448": DhGroup.CURVE448,
}
_ESN = {"esn": EsnId.ESN, "noesn": EsnId.NO_ESN}
_TYPE_ORDER = {
    TransformType.ENCR: 0,
    TransformType.INTEG: 1,
    TransformType.PRF: 2,
    TransformType.DH: 3,
    TransformType.ESN: 4,
}


def parse_proposal(text: str, protocol: ProtocolId, number: int = 1) -> Proposal:
    """A proposal from strongSwan's notation, e.g. ``aes256-sha256-modp2048``.

    Transforms are offered in the order written. ESP gets NO_ESN unless
    ``esn`` is named; IKE without ``prf*`` takes the PRF of its integrity
    algorithm, as strongSwan does. Raises ValueError on an unknown keyword.
    """
    transforms: list[Transform] = []
    for keyword in text.lower().split("-"):
        transforms.append(_transform(keyword, protocol))
    types = {t.transform_type for t in transforms}
    if TransformType.ENCR not in types:
        raise ValueError(f"proposal {text!r} names no encryption algorithm")
    if protocol is ProtocolId.IKE:
        transforms += _implied_ike_transforms(text, transforms, types)
    elif TransformType.ESN not in types:
        transforms.append(Transform(TransformType.ESN, EsnId.NO_ESN))
    # strongSwan's order; the responder's matching compares the order of
    # transform types, so a different one would find no proposal.
    transforms.sort(key=lambda t: _TYPE_ORDER[TransformType(t.transform_type)])
    return Proposal(number, protocol, tuple(transforms))


def parse_proposals(texts: Iterable[str], protocol: ProtocolId) -> tuple[Proposal, ...]:
    """Several proposals, numbered from 1 in order of preference."""
    return tuple(
        parse_proposal(text, protocol, number)
        for number, text in enumerate(texts, start=1)
    )


def _transform(keyword: str, protocol: ProtocolId) -> Transform:
    if keyword in _ENCRYPTION:
        encr_id, bits = _ENCRYPTION[keyword]
        return Transform(TransformType.ENCR, encr_id, bits)
    if keyword in _INTEGRITY:
        return Transform(TransformType.INTEG, _INTEGRITY[keyword])
    if keyword in _PRF and protocol is ProtocolId.IKE:
        return Transform(TransformType.PRF, _PRF[keyword])
    if keyword in _DH:
        return Transform(TransformType.DH, _DH[keyword])
    if keyword in _ESN and protocol is ProtocolId.ESP:
        return Transform(TransformType.ESN, _ESN[keyword])
    raise ValueError(f"unknown {protocol.name} proposal keyword {keyword!r}")


def _implied_ike_transforms(
    text: str, transforms: list[Transform], types: set[TransformType | int]
) -> list[Transform]:
    if TransformType.DH not in types:
        raise ValueError(f"IKE proposal {text!r} names no DH group")
    if TransformType.PRF in types:
        return []
    integrity = [t for t in transforms if t.transform_type == TransformType.INTEG]
    if not integrity:
        raise ValueError(f"IKE proposal {text!r} names neither PRF nor integrity")
    return [
        Transform(TransformType.PRF, _PRF_OF_INTEGRITY[IntegId(i.transform_id)])
        for i in integrity
    ]


def traffic_selector(network: str) -> TrafficSelector:
    """A selector covering a CIDR block, all protocols and ports."""
    block = ip_network(network, strict=False)
    return TrafficSelector(block.network_address, block.broadcast_address)


# ---------------------------------------------------------------------------
# From a negotiated CHILD_SA to what the data plane installs


@dataclass(frozen=True, slots=True)
class ChildSaInstallation:
    """Both directions of a CHILD_SA and the selectors of its policies."""

    outbound: SAConfig
    inbound: SAConfig
    local_selectors: tuple[PolicySelector, ...]
    remote_selectors: tuple[PolicySelector, ...]


def child_sa_installation(
    child: ChildSaEstablished,
    definition: ChildDefinition,
    local: IPAddress,
    remote: IPAddress,
) -> ChildSaInstallation:
    """SAConfigs (ours outbound, ours inbound) for outer addresses ``local``
    and ``remote``; raises ValueError for a transform the ESP engine lacks."""
    encryption = Encryption.from_transform(
        child.encr.encr_id, child.encr.key_length or 0
    )
    integrity = Integrity.from_transform(child.integ.integ_id if child.integ else 0)
    tunnel = definition.mode is Mode.TUNNEL

    def direction(
        spi: bytes, keys: tuple[bytes, bytes], source: IPAddress, to: IPAddress
    ) -> SAConfig:
        return SAConfig(
            spi=int.from_bytes(spi, "big"),
            protocol=Protocol.ESP,
            mode=definition.mode,
            encryption=encryption,
            integrity=integrity,
            encryption_key=keys[0],
            integrity_key=keys[1],
            esn=child.esn,
            replay_window=definition.replay_window,
            tunnel_source=source if tunnel else None,
            tunnel_destination=to if tunnel else None,
        )

    return ChildSaInstallation(
        outbound=direction(child.outbound_spi, child.outbound_keys, local, remote),
        inbound=direction(child.inbound_spi, child.inbound_keys, remote, local),
        local_selectors=tuple(map(_policy_selector, child.local_traffic_selectors)),
        remote_selectors=tuple(map(_policy_selector, child.remote_traffic_selectors)),
    )


def _policy_selector(selector: TrafficSelector) -> PolicySelector:
    return PolicySelector(
        selector.start_address,
        selector.end_address,
        selector.ip_protocol,
        selector.start_port,
        selector.end_port,
    )
