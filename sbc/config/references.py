"""Checks across objects of a configuration that is valid field by field.

Each check yields :class:`Problem` values that name the field at fault by
its path (``("trunks", 2, "listeners", 0)``), so the YAML loader can point
at the line and the admin plane at the form field.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .ipsec import IpsecNode, IpsecProfile, MeshPeer
from .model import Config, Listener, RouteCandidate, Trunk

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One fault in a configuration, at ``path``."""

    path: Path
    message: str


def format_path(path: Path) -> str:
    """``("trunks", 2, "targets", 0, "port")`` -> ``trunks[2].targets[0].port``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def reference_problems(config: Config) -> list[Problem]:
    """Every cross-reference and uniqueness fault of ``config``, in file order."""
    checks = (
        _duplicate_names,
        _listener_sockets,
        _trunk_listeners,
        _target_transports,
        _dial_plan_references,
        _ambiguous_sources,
        _digest_only_trunks,
        _protected_trunks,
        _channel_ports,
        _mesh_peers,
        _ike_peers,
    )
    return [problem for check in checks for problem in check(config)]


def _duplicate_names(config: Config) -> Iterator[Problem]:
    sections = (
        ("listeners", [listener.name for listener in config.listeners]),
        ("trunks", [trunk.name for trunk in config.trunks]),
        ("dial_plans", [plan.name for plan in config.dial_plans]),
        ("ipsec_profiles", [profile.name for profile in config.ipsec_profiles]),
        ("mesh_peers", [peer.name for peer in config.mesh_peers]),
    )
    for section, names in sections:
        first: dict[str, int] = {}
        for index, name in enumerate(names):
            if name in first:
                yield Problem(
                    (section, index, "name"),
                    f"duplicate name {name!r} (first at {section}[{first[name]}])",
                )
            else:
                first[name] = index


def _listener_sockets(config: Config) -> Iterator[Problem]:
    """Two listeners cannot bind one transport, address and port.

    A wildcard address (0.0.0.0, ::) overlaps every address of its family.
    Port 0 (kernel-chosen) never collides.
    """
    seen: list[tuple[int, Listener]] = []
    for index, listener in enumerate(config.listeners):
        for other_index, other in seen:
            if _same_socket(listener, other):
                yield Problem(
                    ("listeners", index, "port"),
                    f"{listener.transport} {listener.address} port {listener.port} "
                    f"is already bound by listeners[{other_index}] ({other.name})",
                )
                break
        seen.append((index, listener))


def _same_socket(one: Listener, two: Listener) -> bool:
    # UDP and TCP ports are separate spaces; TLS runs on TCP.
    def kind(listener: Listener) -> str:
        return "udp" if listener.transport == "udp" else "tcp"

    if kind(one) != kind(two) or one.port != two.port or one.port == 0:
        return False
    if one.address.version != two.address.version:
        return False
    return (
        one.address == two.address
        or one.address.is_unspecified
        or two.address.is_unspecified
    )


def _trunk_listeners(config: Config) -> Iterator[Problem]:
    known = {listener.name for listener in config.listeners}
    for index, trunk in enumerate(config.trunks):
        for position, name in enumerate(trunk.listeners):
            if name not in known:
                yield Problem(
                    ("trunks", index, "listeners", position),
                    f"unknown listener {name!r}",
                )
        if len(set(trunk.listeners)) != len(trunk.listeners):
            yield Problem(("trunks", index, "listeners"), "a listener is named twice")


def _target_transports(config: Config) -> Iterator[Problem]:
    """Each target is reached from one of the trunk's listeners of its transport."""
    by_name = {listener.name: listener for listener in config.listeners}
    for index, trunk in enumerate(config.trunks):
        listeners = [by_name[name] for name in trunk.listeners if name in by_name]
        if len(listeners) != len(trunk.listeners):
            continue  # reported as an unknown listener
        transports = [listener.transport for listener in listeners]
        for transport in set(transports):
            if transports.count(transport) > 1:
                yield Problem(
                    ("trunks", index, "listeners"),
                    f"two {transport} listeners: a trunk uses one per transport",
                )
        for position, target in enumerate(trunk.targets):
            if target.transport not in transports:
                yield Problem(
                    ("trunks", index, "targets", position, "transport"),
                    f"no {target.transport} listener among the trunk's listeners",
                )


def _dial_plan_references(config: Config) -> Iterator[Problem]:
    plans = {plan.name for plan in config.dial_plans}
    # A mesh peer is a derived trunk of its name (sbc.secure.derive).
    trunks = {trunk.name for trunk in config.trunks}
    trunks |= {peer.name for peer in config.mesh_peers}
    for index, trunk in enumerate(config.trunks):
        if trunk.dial_plan is not None and trunk.dial_plan not in plans:
            yield Problem(
                ("trunks", index, "dial_plan"), f"unknown dial plan {trunk.dial_plan!r}"
            )
    for plan_index, plan in enumerate(config.dial_plans):
        prefixes: dict[str, int] = {}
        for route_index, route in enumerate(plan.routes):
            path: tuple[str | int, ...] = (
                "dial_plans",
                plan_index,
                "routes",
                route_index,
            )
            if route.prefix in prefixes:
                yield Problem(
                    (*path, "prefix"),
                    f"prefix {route.prefix!r} already routed by "
                    f"routes[{prefixes[route.prefix]}]",
                )
            prefixes.setdefault(route.prefix, route_index)
            yield from _candidate_problems(path, route.candidates, trunks)


def _candidate_problems(
    path: Path, candidates: Sequence[RouteCandidate], trunks: set[str]
) -> Iterator[Problem]:
    seen: set[str] = set()
    for index, candidate in enumerate(candidates):
        name = candidate.trunk
        where = (*path, "candidates", index, "trunk")
        if name not in trunks:
            yield Problem(where, f"unknown trunk {name!r}")
        elif name in seen:
            yield Problem(where, f"trunk {name!r} is a candidate twice")
        seen.add(name)


def _ambiguous_sources(config: Config) -> Iterator[Problem]:
    """One source network on one listener must identify one trunk."""
    owners: dict[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network], str]
    owners = {}
    for index, trunk in enumerate(config.trunks):
        for position, network in enumerate(trunk.inbound.allow):
            for listener in trunk.listeners:
                owner = owners.setdefault((listener, network), trunk.name)
                if owner != trunk.name:
                    yield Problem(
                        ("trunks", index, "inbound", "allow", position),
                        f"{network} on listener {listener!r} already identifies "
                        f"trunk {owner!r}",
                    )
                    break


def _digest_only_trunks(config: Config) -> Iterator[Problem]:
    """Trunks identified by digest alone share a listener only if the
    challenge can be the same (one realm) and the username tells them apart."""
    realms: dict[str, str] = {}
    users: dict[tuple[str, str], str] = {}
    for index, trunk in enumerate(config.trunks):
        digest = trunk.inbound.digest
        if digest is None or trunk.inbound.allow:
            continue
        where = ("trunks", index, "inbound", "digest")
        for listener in trunk.listeners:
            realm = realms.setdefault(listener, digest.realm)
            if realm != digest.realm:
                yield Problem(
                    (*where, "realm"),
                    f"listener {listener!r} already challenges with realm {realm!r}",
                )
            owner = users.setdefault((listener, digest.username), trunk.name)
            if owner != trunk.name:
                yield Problem(
                    (*where, "username"),
                    f"username already identifies trunk {owner!r} on {listener!r}",
                )


# IPsec: protected trunks, the mesh, IKE peers


def _protected_trunks(config: Config) -> Iterator[Problem]:
    """A protected trunk uses only ipsec listeners (and they only protected
    trunks), and its targets lie where its profile's mode can reach them."""
    by_name = {listener.name: listener for listener in config.listeners}
    for index, trunk in enumerate(config.trunks):
        where: Path = ("trunks", index)
        protected = trunk.ipsec_profile is not None
        for position, name in enumerate(trunk.listeners):
            listener = by_name.get(name)
            if listener is not None and listener.ipsec != protected:
                yield Problem(
                    (*where, "listeners", position),
                    f"listener {name!r} is not an ipsec listener: a protected "
                    "trunk sends nothing in clear"
                    if protected
                    else f"listener {name!r} lives inside IPsec: the trunk names "
                    "no ipsec_profile",
                )
        if trunk.ipsec_profile is None:
            yield from _unprotected_fields(where, trunk)
            continue
        profile = config.ipsec_profile(trunk.ipsec_profile)
        if profile is None:
            yield Problem(
                (*where, "ipsec_profile"),
                f"unknown IPsec profile {trunk.ipsec_profile!r}",
            )
        elif profile.mode == "transport":
            yield from _transport_trunk(config, where, trunk, by_name)
        else:
            yield from _tunnel_trunk(where, trunk)


def _channel_ports(config: Config) -> Iterator[Problem]:
    """An ipsec listener's port lies outside the media relay's range on its
    address: both bind in the same data plane, where a relay port taken
    for a call would silently replace the SIP binding."""
    media = config.media
    if media.address is None:
        return
    for index, listener in enumerate(config.listeners):
        relay_address = listener.media_address or listener.address
        if (
            listener.ipsec
            and relay_address == listener.address
            and media.port_min <= listener.port <= media.port_max
        ):
            yield Problem(
                ("listeners", index, "port"),
                f"port {listener.port} is in the media port range "
                f"{media.port_min}-{media.port_max} on the same address",
            )


def _unprotected_fields(where: Path, trunk: Trunk) -> Iterator[Problem]:
    for field in ("ipsec_gateway", "ipsec_identity"):
        if getattr(trunk, field) is not None:
            yield Problem((*where, field), "needs an ipsec_profile")
    if trunk.ipsec_networks:
        yield Problem((*where, "ipsec_networks"), "needs an ipsec_profile")


def _transport_trunk(
    config: Config, where: Path, trunk: Trunk, by_name: dict[str, Listener]
) -> Iterator[Problem]:
    # Transport mode protects the outer addresses themselves: each target
    # is an IKE peer, and our side of it is the IKE address.
    if trunk.ipsec_gateway is not None:
        yield Problem(
            (*where, "ipsec_gateway"),
            "transport mode has no gateway: each target is an IKE peer",
        )
    if trunk.ipsec_networks:
        yield Problem((*where, "ipsec_networks"), "inner networks need tunnel mode")
    for position, target in enumerate(trunk.targets):
        if _ip(target.host) is None:
            yield Problem(
                (*where, "targets", position, "host"),
                "a protected target is an IP address (it is the IKE peer)",
            )
    node = config.ipsec
    if node is None:
        return
    for position, name in enumerate(trunk.listeners):
        listener = by_name.get(name)
        if listener is None:
            continue
        addresses = {listener.address, listener.media_address or listener.address}
        if addresses != {node.address}:
            yield Problem(
                (*where, "listeners", position),
                f"in transport mode listener {name!r} and its media address "
                f"must be the IKE address {node.address}",
            )


def _tunnel_trunk(where: Path, trunk: Trunk) -> Iterator[Problem]:
    if trunk.ipsec_gateway is None:
        yield Problem(
            (*where, "ipsec_gateway"), "tunnel mode needs the peer's IKE gateway"
        )
    if not trunk.ipsec_networks:
        yield Problem(
            (*where, "ipsec_networks"), "tunnel mode needs the peer's inner networks"
        )
        return
    for position, target in enumerate(trunk.targets):
        address = _ip(target.host)
        if address is None or not any(
            address in network for network in trunk.ipsec_networks
        ):
            yield Problem(
                (*where, "targets", position, "host"),
                "a tunnel-mode target is an IP address inside ipsec_networks",
            )


def _mesh_peers(config: Config) -> Iterator[Problem]:
    trunks = {trunk.name for trunk in config.trunks}
    for index, peer in enumerate(config.mesh_peers):
        where: Path = ("mesh_peers", index)
        if peer.name in trunks:
            yield Problem(
                (*where, "name"),
                f"trunk {peer.name!r} exists: a mesh peer is a trunk of its name",
            )
        profile = config.ipsec_profile(peer.profile)
        if profile is None:
            yield Problem(
                (*where, "profile"), f"unknown IPsec profile {peer.profile!r}"
            )
        else:
            yield from _mesh_inner_addresses(where, peer, profile)
    if config.mesh_peers and config.ipsec is not None:
        yield from _mesh_node(config, config.ipsec)


def _mesh_inner_addresses(
    where: Path, peer: MeshPeer, profile: IpsecProfile
) -> Iterator[Problem]:
    if profile.mode == "transport":
        if peer.inner_networks:
            yield Problem((*where, "inner_networks"), "inner networks need tunnel mode")
        if peer.sip_address not in (None, peer.address):
            yield Problem(
                (*where, "sip_address"),
                "in transport mode the peer's SIP address is its IKE address",
            )
        return
    if not peer.inner_networks:
        yield Problem(
            (*where, "inner_networks"), "tunnel mode needs the peer's inner networks"
        )
    elif peer.sip_address is None or not any(
        peer.sip_address in network for network in peer.inner_networks
    ):
        yield Problem(
            (*where, "sip_address"),
            "tunnel mode needs the peer's SIP address inside its inner networks",
        )


def _mesh_node(config: Config, node: IpsecNode) -> Iterator[Problem]:
    where: Path = ("ipsec",)
    if node.mesh_listener is None:
        yield Problem((*where, "mesh_listener"), "mesh peers need a mesh_listener")
    else:
        listener = config.listener(node.mesh_listener)
        if listener is None or not listener.ipsec:
            yield Problem(
                (*where, "mesh_listener"),
                f"{node.mesh_listener!r} is not an ipsec listener",
            )
    plan = node.mesh_dial_plan
    if plan is not None and config.dial_plan(plan) is None:
        yield Problem((*where, "mesh_dial_plan"), f"unknown dial plan {plan!r}")


def _ike_peers(config: Config) -> Iterator[Problem]:
    """One IKE peer address, one peering: the daemon matches a peer's
    IKE_SA_INIT to its connection by address alone."""
    owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}

    def claim(
        address: ipaddress.IPv4Address | ipaddress.IPv6Address, owner: str
    ) -> str | None:
        first = owners.setdefault(address, owner)
        return None if first == owner else first

    for index, trunk in enumerate(config.trunks):
        for path, address in _trunk_peers(config, trunk):
            other = claim(address, f"trunk {trunk.name!r}")
            if other is not None:
                yield Problem(
                    ("trunks", index, *path),
                    f"IKE peer {address} already belongs to {other}",
                )
    for index, peer in enumerate(config.mesh_peers):
        other = claim(peer.address, f"mesh peer {peer.name!r}")
        if other is not None:
            yield Problem(
                ("mesh_peers", index, "address"),
                f"IKE peer {peer.address} already belongs to {other}",
            )


def _trunk_peers(
    config: Config, trunk: Trunk
) -> Iterator[tuple[Path, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    profile = config.ipsec_profile(trunk.ipsec_profile) if trunk.ipsec_profile else None
    if profile is None:
        return
    if profile.mode == "tunnel":
        if trunk.ipsec_gateway is not None:
            yield ("ipsec_gateway",), trunk.ipsec_gateway
        return
    seen: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for position, target in enumerate(trunk.targets):
        address = _ip(target.host)
        if address is not None and address not in seen:
            seen.add(address)
            yield ("targets", position, "host"), address


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
