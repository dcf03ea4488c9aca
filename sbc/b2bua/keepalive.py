"""OPTIONS keepalive of a trunk's targets (RFC 3261 §11), sans-IO.

One `KeepaliveMonitor` per trunk with a ``keepalive`` section pings each
target through the engine's `TransactionLayer` (attach it with
`B2bua.attach`). Any final response, even an error, counts as an answer:
it proves the peer is alive. A transaction timeout or transport error
counts as no answer. A target goes down after ``down_threshold`` misses
in a row and comes back after ``up_threshold`` answers in a row; the
trunk is down while every one of its targets is, and is then kept in the
engine's ``down_trunks`` set, which routing skips.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import MutableSet
from dataclasses import dataclass

from sbc.b2bua.settings import LocalEndpoint, RandomSource
from sbc.config.model import Config, Target, Trunk
from sbc.routing import TargetKey
from sbc.sip.events import (
    ResponseReceived,
    TransactionEvent,
    TransactionTimedOut,
    TransportErrorOccurred,
)
from sbc.sip.message import Headers, Request
from sbc.sip.requests import new_branch
from sbc.sip.transaction import ClientTransactionKey, TransactionLayer

_log = logging.getLogger("sbc.b2bua.keepalive")


@dataclass(frozen=True, slots=True)
class TargetWentDown:
    target: TargetKey


@dataclass(frozen=True, slots=True)
class TargetCameUp:
    target: TargetKey


@dataclass(frozen=True, slots=True)
class TrunkWentDown:
    trunk: str


@dataclass(frozen=True, slots=True)
class TrunkCameUp:
    trunk: str


KeepaliveEvent = TargetWentDown | TargetCameUp | TrunkWentDown | TrunkCameUp


@dataclass(slots=True, eq=False)
class _Probe:
    """One target's ping state."""

    key: TargetKey
    endpoint: LocalEndpoint
    up: bool = True
    """Targets start up: a new trunk is usable until pings prove otherwise."""
    heard: bool = False
    """Whether any ping has had its outcome: the first answer is a verdict."""
    streak: int = 0
    """Outcomes in a row that disagree with ``up`` (misses while up)."""
    next_ping: float | None = None
    pending: ClientTransactionKey | None = None


class KeepaliveMonitor:
    """The OPTIONS pinger of one trunk."""

    def __init__(
        self,
        layer: TransactionLayer,
        trunk: Trunk,
        endpoints: dict[str, LocalEndpoint],
        rng: RandomSource,
        down_trunks: MutableSet[str],
    ) -> None:
        """``endpoints`` maps an upper-case transport to our endpoint on it;
        a target whose transport we have no listener for is not pinged."""
        if trunk.keepalive is None:
            raise ValueError(f"trunk {trunk.name} has no keepalive settings")
        self._layer = layer
        self._trunk = trunk.name
        self._settings = trunk.keepalive
        self._rng = rng
        self._down_trunks = down_trunks
        self._probes = [
            _Probe(_key(trunk.name, target), endpoints[target.transport.upper()])
            for target in trunk.targets
            if target.transport.upper() in endpoints
        ]
        self._by_key: dict[ClientTransactionKey, _Probe] = {}
        self._events: deque[KeepaliveEvent] = deque()
        self._from_tag = rng.randbytes(6).hex()
        self._answered = False

    @property
    def down_targets(self) -> frozenset[TargetKey]:
        return frozenset(probe.key for probe in self._probes if not probe.up)

    def start(self, now: float) -> None:
        """Ping every target now, then every ``interval`` seconds."""
        for probe in self._probes:
            probe.next_ping = now

    def stop(self) -> None:
        """No more pings; the trunk's state is left as it is."""
        for probe in self._probes:
            probe.next_ping = None

    def next_event(self) -> KeepaliveEvent | None:
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        due = [
            probe.next_ping
            for probe in self._probes
            if probe.next_ping is not None and probe.pending is None
        ]
        return min(due, default=None)

    def handle_timer(self, now: float) -> None:
        for probe in self._probes:
            if probe.pending is None and probe.next_ping is not None:
                if now >= probe.next_ping:
                    self._ping(probe, now)

    def handle_event(self, event: TransactionEvent, now: float) -> bool:
        if not isinstance(
            event, (ResponseReceived, TransactionTimedOut, TransportErrorOccurred)
        ):
            return False
        if not isinstance(event.key, ClientTransactionKey):
            return False
        probe = self._by_key.get(event.key)
        if probe is None:
            return False
        if isinstance(event, ResponseReceived):
            if event.response.status >= 200:
                self._outcome(probe, event.key, answered=True)
        else:
            self._outcome(probe, event.key, answered=False)
        return True

    # -- Pings and outcomes -------------------------------------------------------

    def _ping(self, probe: _Probe, now: float) -> None:
        request = self._options(probe)
        target = probe.key
        key = self._layer.send_request(
            request, (target.host, target.port), target.transport.upper(), now
        )
        probe.pending = key
        probe.next_ping = now + self._settings.interval
        self._by_key[key] = probe

    def _options(self, probe: _Probe) -> Request:
        target, endpoint = probe.key, probe.endpoint
        host = f"[{target.host}]" if ":" in target.host else target.host
        transport = target.transport.upper()
        params = "" if transport == "UDP" else f";transport={transport.lower()}"
        uri = f"sip:{host}:{target.port}{params}"
        branch = new_branch(self._rng.randbytes(8))
        headers = Headers()
        headers.add(
            "Via",
            f"SIP/2.0/{endpoint.transport} {endpoint.host_port};branch={branch};rport",
        )
        headers.add("Max-Forwards", "70")
        headers.add(
            "From", f"<sip:keepalive@{endpoint.host_port}>;tag={self._from_tag}"
        )
        headers.add("To", f"<{uri}>")
        headers.add("Call-ID", self._rng.randbytes(12).hex())
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Accept", "application/sdp")
        return Request("OPTIONS", uri, headers)

    def _outcome(
        self, probe: _Probe, key: ClientTransactionKey, *, answered: bool
    ) -> None:
        del self._by_key[key]
        probe.pending = None
        first, probe.heard = not probe.heard, True
        if answered == probe.up:
            probe.streak = 0
            if first and answered:
                self._first_answer(probe)
            return
        probe.streak += 1
        settings = self._settings
        needed = settings.up_threshold if answered else settings.down_threshold
        if probe.streak < needed:
            return
        probe.up = answered
        probe.streak = 0
        self._events.append(
            TargetCameUp(probe.key) if answered else TargetWentDown(probe.key)
        )
        _log.info(
            "trunk %s: target %s:%d %s",
            self._trunk,
            probe.key.host,
            probe.key.port,
            "up" if answered else "down",
        )
        self._update_trunk()

    def _first_answer(self, probe: _Probe) -> None:
        """A target assumed up proves it: TargetCameUp, and TrunkCameUp for
        the trunk's first, so views show a verdict, not just the default."""
        self._events.append(TargetCameUp(probe.key))
        if not self._answered:
            self._answered = True
            self._events.append(TrunkCameUp(self._trunk))
            _log.info("trunk %s: targets answer OPTIONS", self._trunk)

    def _update_trunk(self) -> None:
        down = bool(self._probes) and not any(probe.up for probe in self._probes)
        was_down = self._trunk in self._down_trunks
        if down and not was_down:
            self._down_trunks.add(self._trunk)
            self._events.append(TrunkWentDown(self._trunk))
            _log.warning("trunk %s is down: no target answers OPTIONS", self._trunk)
        elif was_down and not down:
            self._down_trunks.discard(self._trunk)
            self._events.append(TrunkCameUp(self._trunk))
            _log.warning("trunk %s is up again", self._trunk)


def keepalive_monitors(
    layer: TransactionLayer,
    config: Config,
    endpoints: dict[str, LocalEndpoint],
    rng: RandomSource,
    down_trunks: MutableSet[str],
) -> list[KeepaliveMonitor]:
    """One monitor per trunk with ``keepalive``."""
    return [
        KeepaliveMonitor(layer, trunk, endpoints, rng, down_trunks)
        for trunk in config.trunks
        if trunk.keepalive is not None
    ]


def _key(trunk: str, target: Target) -> TargetKey:
    return TargetKey(trunk, target.host, target.port, target.transport)


__all__ = [
    "KeepaliveEvent",
    "KeepaliveMonitor",
    "TargetCameUp",
    "TargetWentDown",
    "TrunkCameUp",
    "TrunkWentDown",
    "keepalive_monitors",
]
