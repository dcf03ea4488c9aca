"""Which trunk a request came from, and which trunks a call may go to.

Sans-IO: the router is built once from a :class:`~sbc.config.Config` and
answers pure questions. Randomness (weighted order) and trunk state (which
trunks and targets are down) are passed in by the caller.

Inbound classification (policy, see docs/configuration.md):

1. Only trunks that use the listener the request arrived on are considered.
2. The source address is matched against their ``inbound.allow`` networks;
   the most specific network wins. A matching trunk with ``inbound.digest``
   must still authenticate the request.
3. Otherwise, trunks on that listener identified by digest alone are
   considered: without credentials the request is challenged with their
   shared realm; with them, the username names the trunk.
4. Otherwise the request is refused with 403 (RFC 3261 §21.4.4): an SBC
   answers strangers with a policy refusal, not a challenge.

Outbound routing: the trunk's dial plan is searched for the longest prefix
of the normalized called number; only that route is used (shorter prefixes
are not a fallback). Its candidates are ordered by priority, and within a
priority by weighted random order (RFC 2782 §3 selection); each trunk's
targets are ordered the same way. Down trunks and targets are skipped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from sbc.config.model import Config, DialPlan, Route, Target, Trunk
from sbc.sip.errors import SipError

T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RandomSource(Protocol):
    """What the router draws from: ``random.Random`` or a seeded stand-in."""

    def random(self) -> float: ...


class RoutingError(SipError):
    """A call the router cannot place; ``cause`` says why, for logs and stats
    (the reason phrase stays generic so it tells a stranger nothing)."""

    def __init__(self, reason: str, *, cause: str) -> None:
        super().__init__(reason)
        self.cause = cause


class SourceForbidden(RoutingError):
    """403: the request matches no trunk on its listener."""

    status_code = 403


class NoRouteFound(RoutingError):
    """404: no route of the dial plan matches the called number."""

    status_code = 404


class NoTrunkAvailable(RoutingError):
    """480: a route matched but every candidate is down or has failed."""

    status_code = 480


@dataclass(frozen=True, slots=True)
class InboundMatch:
    """The request belongs to ``trunk``."""

    trunk: str
    authenticate: bool
    """The trunk requires digest authentication: challenge unless the
    request carries credentials that verify (RFC 3261 §22.3)."""
    realm: str | None
    """Realm of that challenge, when ``authenticate``."""


@dataclass(frozen=True, slots=True)
class DigestChallengeNeeded:
    """No address matched, but digest-only trunks use this listener: answer
    401 with this realm; the retry's username will name the trunk."""

    realm: str


class TargetKey(NamedTuple):
    """Stable key of one target of one trunk (keepalive state is kept by it)."""

    trunk: str
    host: str
    port: int
    transport: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """One attempt: a target of a trunk."""

    trunk: str
    target: Target

    @property
    def key(self) -> TargetKey:
        target = self.target
        return TargetKey(self.trunk, target.host, target.port, target.transport)


class FailoverPlan:
    """The ordered attempts for one call, consumed as they fail.

    ``current`` is the attempt to make now. After it fails, call
    :meth:`fail_over` with the final status received (None for no answer).
    """

    __slots__ = ("_candidates", "_failover", "_index", "prefix")

    def __init__(
        self,
        candidates: Sequence[Candidate],
        failover: Callable[[str, int], bool],
        prefix: str,
    ) -> None:
        if not candidates:
            raise NoTrunkAvailable("Temporarily Unavailable", cause="all down")
        self._candidates = tuple(candidates)
        self._failover = failover
        self._index = 0
        # The dial plan prefix that matched, for call records and logs.
        self.prefix = prefix

    @property
    def current(self) -> Candidate:
        return self._candidates[self._index]

    @property
    def remaining(self) -> tuple[Candidate, ...]:
        """``current`` and every attempt after it, in order."""
        return self._candidates[self._index :]

    def fail_over(self, status: int | None) -> Candidate | None:
        """The next attempt after ``current`` failed with ``status``.

        ``status`` None means no final response (timeout, transport error,
        or a local refusal such as admission control): always fail over.
        Returns None when ``status`` is not a failover code of the trunk
        that sent it: relay that response to the caller. Raises
        :class:`NoTrunkAvailable` (480) when no attempt is left.
        """
        if status is not None and not self._failover(self.current.trunk, status):
            return None
        self._index += 1
        if self._index >= len(self._candidates):
            self._index = len(self._candidates) - 1
            raise NoTrunkAvailable("Temporarily Unavailable", cause="all failed")
        return self._candidates[self._index]


class CallRouter:
    """Inbound classification and outbound candidate selection."""

    def __init__(self, config: Config) -> None:
        self._trunks = {trunk.name: trunk for trunk in config.trunks}
        self._acl = _source_index(config.trunks)
        self._digest_only = _digest_index(config.trunks)
        self._plans = {plan.name: _PrefixIndex(plan) for plan in config.dial_plans}
        self._failover_codes = {
            trunk.name: failover_statuses(trunk.failover_codes)
            for trunk in config.trunks
        }

    def classify(
        self, listener: str, source: IPAddress | str, username: str | None = None
    ) -> InboundMatch | DigestChallengeNeeded:
        """The trunk a request arriving on ``listener`` from ``source`` is from.

        ``username`` is the digest username of the request's credentials,
        if it carries any. Raises :class:`SourceForbidden` (403).
        """
        address = _plain_address(source)
        for network, trunk in self._acl.get((listener, address.version), ()):
            if address in network:
                digest = trunk.inbound.digest
                realm = None if digest is None else digest.realm
                return InboundMatch(trunk.name, digest is not None, realm)

        # Step 3: digest-only trunks of this listener.
        realm_users = self._digest_only.get(listener)
        if realm_users is None:
            raise SourceForbidden("Forbidden", cause="source address not allowed")
        realm, users = realm_users
        if username is None:
            return DigestChallengeNeeded(realm)
        trunk_name = users.get(username)
        if trunk_name is None:
            raise SourceForbidden("Forbidden", cause="unknown digest username")
        return InboundMatch(trunk_name, True, realm)

    def route(
        self,
        from_trunk: str,
        called_number: str,
        rng: RandomSource,
        *,
        down_trunks: Container[str] = frozenset(),
        down_targets: Container[TargetKey] = frozenset(),
    ) -> FailoverPlan:
        """The attempts for a call from ``from_trunk`` to ``called_number``.

        ``called_number`` is already normalized by the source trunk's
        inbound rules. Raises :class:`NoRouteFound` (404) when no prefix
        matches and :class:`NoTrunkAvailable` (480) when every candidate of
        the matching route is down.
        """
        route = self._lookup(from_trunk, called_number)
        candidates: list[Candidate] = []
        for choice in _ordered(route.candidates, rng):
            if choice.trunk in down_trunks:
                continue
            for target in _ordered(self._trunks[choice.trunk].targets, rng):
                candidate = Candidate(choice.trunk, target)
                if not down_targets or candidate.key not in down_targets:
                    candidates.append(candidate)
        return FailoverPlan(candidates, self.is_failover_status, route.prefix)

    def is_failover_status(self, trunk: str, status: int) -> bool:
        """Whether a final ``status`` from ``trunk`` moves on to the next."""
        return status in self._failover_codes.get(trunk, frozenset())

    def _lookup(self, from_trunk: str, called_number: str) -> Route:
        trunk = self._trunks.get(from_trunk)
        if trunk is None or trunk.dial_plan is None:
            raise NoRouteFound("Not Found", cause="source trunk has no dial plan")
        route = self._plans[trunk.dial_plan].longest_match(called_number)
        if route is None:
            raise NoRouteFound("Not Found", cause="no route for the called number")
        return route


class _HasPriority(Protocol):
    @property
    def priority(self) -> int: ...

    @property
    def weight(self) -> int: ...


P = TypeVar("P", bound=_HasPriority)


def _ordered(items: Sequence[P], rng: RandomSource) -> list[P]:
    """By priority, then weighted random order within each priority."""
    if len(items) == 1:
        return [items[0]]  # the common case: draw nothing
    ordered: list[P] = []
    for priority in sorted({item.priority for item in items}):
        group = [item for item in items if item.priority == priority]
        ordered += weighted_order(group, [item.weight for item in group], rng)
    return ordered


def weighted_order(
    items: Sequence[T], weights: Sequence[int], rng: RandomSource
) -> list[T]:
    """``items`` in random order, each next pick chosen with probability
    proportional to its weight among those left (RFC 2782 §3).

    Zero-weight items follow the weighted ones, in their given order.
    """
    pool = [
        (item, weight)
        for item, weight in zip(items, weights, strict=True)
        if weight > 0
    ]
    order: list[T] = []
    total = sum(weight for _, weight in pool)
    while pool:
        draw = rng.random() * total
        running = 0
        index = len(pool) - 1  # guards a draw that rounding puts at total
        for position, (_, weight) in enumerate(pool):
            running += weight
            if draw < running:
                index = position
                break
        item, weight = pool.pop(index)
        order.append(item)
        total -= weight
    order += [item for item, weight in zip(items, weights, strict=True) if weight <= 0]
    return order


def failover_statuses(codes: Sequence[int | str]) -> frozenset[int]:
    """The statuses meant by failover codes such as ``503`` and ``"5xx"``."""
    statuses: set[int] = set()
    for code in codes:
        if isinstance(code, str):
            base = int(code[0]) * 100
            statuses.update(range(base, base + 100))
        else:
            statuses.add(int(code))
    return frozenset(statuses)


class _PrefixIndex:
    """Longest-prefix lookup in one dial plan: one dict probe per length."""

    __slots__ = ("_lengths", "_routes")

    def __init__(self, plan: DialPlan) -> None:
        self._routes = {route.prefix: route for route in plan.routes}
        self._lengths = sorted({len(prefix) for prefix in self._routes}, reverse=True)

    def longest_match(self, number: str) -> Route | None:
        routes = self._routes
        size = len(number)
        for length in self._lengths:
            if length <= size:
                route = routes.get(number[:length])
                if route is not None:
                    return route
        return None


def _source_index(
    trunks: Sequence[Trunk],
) -> dict[tuple[str, int], list[tuple[IPNetwork, Trunk]]]:
    """Per listener and IP version, (network, trunk), most specific first."""
    index: dict[tuple[str, int], list[tuple[IPNetwork, Trunk]]] = {}
    for trunk in trunks:
        for network in trunk.inbound.allow:
            for listener in trunk.listeners:
                key = (listener, network.version)
                index.setdefault(key, []).append((network, trunk))
    for entries in index.values():
        entries.sort(key=lambda entry: entry[0].prefixlen, reverse=True)
    return index


def _digest_index(trunks: Sequence[Trunk]) -> dict[str, tuple[str, dict[str, str]]]:
    """Per listener: the realm and username -> trunk of digest-only trunks."""
    index: dict[str, tuple[str, dict[str, str]]] = {}
    for trunk in trunks:
        digest = trunk.inbound.digest
        if digest is None or trunk.inbound.allow:
            continue
        for listener in trunk.listeners:
            _, users = index.setdefault(listener, (digest.realm, {}))
            users.setdefault(digest.username, trunk.name)
    return index


def _plain_address(source: IPAddress | str) -> IPAddress:
    address = ipaddress.ip_address(source) if isinstance(source, str) else source
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address
