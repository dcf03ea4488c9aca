"""From the configuration to IKE connections, without I/O.

A protected trunk becomes one IKE connection per IKE peer:

- transport mode: each target address is a peer, and the connection
  protects all traffic between the trunk's ipsec listener (whose address is
  this node's IKE address) and that target;
- tunnel mode: the trunk's ``ipsec_gateway`` is the one peer, and the
  connection protects the listener's address (and its media address) to
  the peer's ``ipsec_networks``.

Each mesh peer first becomes a ``peer-sbc`` trunk of its own name
(:func:`mesh_trunks`), so a mesh is nothing but protected trunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from ipsec.esp import Mode
from ipsec.ike.certificates import CertificateAuthentication
from ipsec.ike.config import DpdAction, Identity
from ipsec.ike.connection import (
    ChildDefinition,
    CloseAction,
    ConnectionDefinition,
    StartAction,
    parse_proposals,
    traffic_selector,
)
from ipsec.ike.constants import IdType, ProtocolId
from ipsec.ike.keymat import PresharedKey
from ipsec.ike.payloads import TrafficSelector
from sbc.config.ipsec import (
    EspProposal,
    IdentityType,
    IkeProposal,
    IpsecNode,
    IpsecProfile,
    MeshPeer,
    identity_bytes,
)
from sbc.config.model import Config, Listener, Trunk

IPAddress = IPv4Address | IPv6Address

_ID_TYPES = {
    "fqdn": IdType.ID_FQDN,
    "email": IdType.ID_RFC822_ADDR,
    "ipv4": IdType.ID_IPV4_ADDR,
    "ipv6": IdType.ID_IPV6_ADDR,
    "dn": IdType.ID_DER_ASN1_DN,
    "key_id": IdType.ID_KEY_ID,
}

_REKEY_JITTER = 0.1
"""Rekeys come up to this share of the lifetime early (strongSwan's
``rand_time`` default), so that two peers rarely rekey together."""


class NodeSectionMissing(ValueError):
    """Protected trunks are configured but the ``ipsec`` section is not."""


@dataclass(frozen=True, slots=True)
class TrunkConnection:
    """One IKE peering of a protected trunk."""

    trunk: str
    peer: IPAddress
    """The peer's IKE address."""
    definition: ConnectionDefinition
    credentials: tuple[str, ...] = field(default=(), repr=False)
    """The profile's PEM texts (certificate, key, CAs): they stand for the
    loaded certificates when two derivations are compared. Never printed:
    the key is among them."""


def connection_name(trunk: str, peer: IPAddress) -> str:
    """``trunk@peer``: unique, since one IKE peer belongs to one trunk."""
    return f"{trunk}@{peer}"


def protected_connections(config: Config) -> list[TrunkConnection]:
    """Every IKE connection ``config`` asks for, mesh peers included.

    Raises :class:`NodeSectionMissing` when a trunk or mesh peer is
    protected but the node has no ``ipsec`` section, and ValueError for
    certificates that do not load. ``config`` passed the reference checks.
    """
    node = config.ipsec
    expanded = with_mesh(config)
    protected = [trunk for trunk in expanded.trunks if trunk.ipsec_profile]
    if not protected:
        return []
    if node is None:
        raise NodeSectionMissing(
            "protected trunks need the ipsec section (this node's IKE address)"
        )
    mesh = {peer.name for peer in config.mesh_peers}
    connections: list[TrunkConnection] = []
    for trunk in protected:
        profile = expanded.ipsec_profile(trunk.ipsec_profile or "")
        listener = expanded.listener(trunk.listeners[0])
        if profile is None or listener is None:
            raise ValueError(f"trunk {trunk.name}: unchecked configuration")
        connections += trunk_connections(
            trunk, profile, listener, node, mesh=trunk.name in mesh
        )
    return connections


def trunk_connections(
    trunk: Trunk,
    profile: IpsecProfile,
    listener: Listener,
    node: IpsecNode,
    *,
    mesh: bool = False,
) -> list[TrunkConnection]:
    """The connections of one protected trunk (see the module docstring).

    ``listener`` is the trunk's ipsec listener. A mesh trunk is initiated by
    the node with the lower IKE address only, so that two nodes do not set
    up two IKE_SAs for one peering; other trunks follow the profile.
    """
    local: tuple[TrafficSelector, ...]
    remotes: dict[IPAddress, tuple[TrafficSelector, ...]]
    if profile.mode == "transport":
        local = (_host_selector(listener.address),)
        peers = _target_addresses(trunk)
        remotes = {peer: (_host_selector(peer),) for peer in peers}
    else:
        if trunk.ipsec_gateway is None:
            raise ValueError(f"trunk {trunk.name}: tunnel mode without a gateway")
        inner = {listener.address, listener.media_address or listener.address}
        local = tuple(_host_selector(address) for address in sorted(inner, key=str))
        networks = tuple(traffic_selector(str(n)) for n in trunk.ipsec_networks)
        remotes = {trunk.ipsec_gateway: networks}
    return [
        TrunkConnection(
            trunk.name,
            peer,
            _definition(trunk, profile, node, peer, local, remote, mesh=mesh),
            _credentials(profile),
        )
        for peer, remote in remotes.items()
    ]


def _definition(
    trunk: Trunk,
    profile: IpsecProfile,
    node: IpsecNode,
    peer: IPAddress,
    local_ts: tuple[TrafficSelector, ...],
    remote_ts: tuple[TrafficSelector, ...],
    *,
    mesh: bool,
) -> ConnectionDefinition:
    lifetimes, dpd = profile.lifetimes, profile.dpd
    start = _start_action(profile, node, peer, mesh=mesh)
    child = ChildDefinition(
        trunk.name,
        local_ts,
        remote_ts,
        parse_proposals(map(esp_proposal_text, profile.esp_proposals), ProtocolId.ESP),
        mode=Mode.TUNNEL if profile.mode == "tunnel" else Mode.TRANSPORT,
        rekey_time=float(lifetimes.child_seconds),
    )
    return ConnectionDefinition(
        name=connection_name(trunk.name, peer),
        local_address=node.address,
        remote_address=peer,
        local_id=identity(node.identity_type, node.identity, node.address),
        remote_id=identity(trunk.ipsec_identity_type, trunk.ipsec_identity, peer),
        psk=_psk(profile),
        ike_proposals=parse_proposals(
            map(ike_proposal_text, profile.ike_proposals), ProtocolId.IKE
        ),
        child=child,
        start_action=start,
        # The side that starts also sets it up again when the peer deletes
        # its CHILD_SA or IKE_SA (swanctl's close_action = start).
        close_action=CloseAction.START
        if start is StartAction.START
        else CloseAction.NONE,
        remote_port=node.ike_port,
        remote_nat_t_port=node.nat_t_port,
        # Only ESP in UDP reaches the data plane's channel (IpsecNode).
        encap=True,
        rand_time=lifetimes.child_seconds * _REKEY_JITTER,
        ike_rekey_time=float(lifetimes.ike_seconds),
        dpd_delay=None if dpd is None else float(dpd.delay),
        dpd_action=DpdAction(dpd.action) if dpd is not None else DpdAction.CLEAR,
        retransmit_timeout=profile.retransmission.timeout,
        retransmit_tries=profile.retransmission.tries,
        certificates=_certificates(profile),
    )


def _start_action(
    profile: IpsecProfile, node: IpsecNode, peer: IPAddress, *, mesh: bool
) -> StartAction:
    if mesh:
        initiates = int(node.address) < int(peer)
    else:
        initiates = profile.start_action == "start"
    return StartAction.START if initiates else StartAction.NONE


def identity(
    identity_type: IdentityType, value: str | None, address: IPAddress
) -> Identity:
    """The configured identity, or ``address`` as an IP identity."""
    if value is None:
        kind = IdType.ID_IPV4_ADDR if address.version == 4 else IdType.ID_IPV6_ADDR
        return Identity(kind, address.packed)
    return Identity(_ID_TYPES[identity_type], identity_bytes(identity_type, value))


def ike_proposal_text(proposal: IkeProposal) -> str:
    """strongSwan's notation, e.g. ``aes128gcm16-prfsha256-curve25519``."""
    parts = [proposal.encryption, proposal.integrity, proposal.prf, proposal.dh]
    return "-".join(part for part in parts if part is not None)


def esp_proposal_text(proposal: EspProposal) -> str:
    """strongSwan's notation, e.g. ``aes128gcm16-esn`` (``dh``: PFS group)."""
    parts: list[str | None] = [proposal.encryption, proposal.integrity, proposal.dh]
    parts.append("esn" if proposal.esn else "noesn")
    return "-".join(part for part in parts if part is not None)


def _psk(profile: IpsecProfile) -> PresharedKey | None:
    if profile.psk is None:
        return None
    return PresharedKey(profile.psk.get_secret_value().encode())


def _certificates(profile: IpsecProfile) -> CertificateAuthentication | None:
    if profile.auth != "certificate":
        return None
    key = profile.private_key
    return CertificateAuthentication.from_pem(
        certificate=(profile.certificate or "").encode(),
        private_key=None if key is None else key.get_secret_value().encode(),
        trust_anchors="\n".join(profile.ca_certificates).encode(),
    )


def _credentials(profile: IpsecProfile) -> tuple[str, ...]:
    key = profile.private_key
    secret = "" if key is None else key.get_secret_value()
    return (profile.certificate or "", secret, *profile.ca_certificates)


def _target_addresses(trunk: Trunk) -> list[IPAddress]:
    """The targets' addresses, each once, in configured order."""
    addresses: dict[IPAddress, None] = {}
    for target in trunk.targets:
        addresses.setdefault(ip_address(target.host))
    return list(addresses)


def _host_selector(address: IPAddress) -> TrafficSelector:
    return traffic_selector(str(ip_network(address)))


# ---------------------------------------------------------------------------
# The mesh


def mesh_trunks(config: Config) -> list[Trunk]:
    """One ``peer-sbc`` trunk per mesh peer, named after it.

    It uses the node's ``mesh_listener``, targets the peer's SIP address
    (UDP), identifies requests from that address, routes them with the
    ``mesh_dial_plan``, and is protected by the peer's profile: IKE with the
    peer's address and identity, tunnel selectors to its inner networks.
    Empty without an ``ipsec`` section or a mesh listener (the reference
    checks report those).
    """
    node = config.ipsec
    if node is None or node.mesh_listener is None:
        return []
    return [_mesh_trunk(config, node, node.mesh_listener, p) for p in config.mesh_peers]


def _mesh_trunk(
    config: Config, node: IpsecNode, listener: str, peer: MeshPeer
) -> Trunk:
    profile = config.ipsec_profile(peer.profile)
    tunnel = profile is not None and profile.mode == "tunnel"
    sip = peer.sip_address or peer.address
    return Trunk.model_validate(
        {
            "name": peer.name,
            "kind": "peer-sbc",
            "listeners": [listener],
            "targets": [{"host": str(sip), "port": peer.sip_port}],
            "inbound": {"allow": [ip_network(sip)]},
            "dial_plan": node.mesh_dial_plan,
            "ipsec_profile": peer.profile,
            "ipsec_gateway": peer.address if tunnel else None,
            "ipsec_networks": peer.inner_networks if tunnel else [],
            "ipsec_identity_type": peer.identity_type,
            "ipsec_identity": peer.identity,
        }
    )


def with_mesh(config: Config) -> Config:
    """``config`` with the mesh peers' derived trunks after its own."""
    derived = mesh_trunks(config)
    if not derived:
        return config
    return config.model_copy(update={"trunks": [*config.trunks, *derived]})
