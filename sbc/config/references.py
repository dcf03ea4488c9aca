"""Checks across objects of a configuration that is valid field by field.

Each check yields :class:`Problem` values that name the field at fault by
its path (``("trunks", 2, "listeners", 0)``), so the YAML loader can point
at the line and the admin plane at the form field.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .model import Config, Listener, RouteCandidate

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
    )
    return [problem for check in checks for problem in check(config)]


def _duplicate_names(config: Config) -> Iterator[Problem]:
    sections = (
        ("listeners", [listener.name for listener in config.listeners]),
        ("trunks", [trunk.name for trunk in config.trunks]),
        ("dial_plans", [plan.name for plan in config.dial_plans]),
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
    trunks = {trunk.name for trunk in config.trunks}
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
