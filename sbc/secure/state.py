"""A protected trunk's state from its SAs and its OPTIONS keepalive, sans-IO.

Each IKE connection of a trunk (one per IKE peer) is *protected* while at
least one of its CHILD_SAs is installed; the daemon's events say when that
changes and why. The trunk's protection is up when every connection is,
partial when some are, down when none is. Combined with the keepalive
(``sbc.b2bua.keepalive`` events) the trunk is:

=========  ==========================================================
up         every IKE peer protected, no target failing OPTIONS
degraded   usable, but an IKE peer has no CHILD_SA or a target is down
down       no CHILD_SA at all, or every target failing OPTIONS
=========  ==========================================================

Routing skips a trunk whose protection is down (:attr:`unprotected`);
the keepalive's own down state already reaches routing through the call
engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from ipsec.ike.constants import NotifyType
from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRefused,
    ChildSaRemoved,
    DaemonEvent,
    IkeSaDown,
    PeerDead,
)
from sbc.b2bua.keepalive import (
    KeepaliveEvent,
    TargetCameUp,
    TargetWentDown,
    TrunkWentDown,
)


class TrunkState(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class SecureTrunkStateChanged:
    """A protected trunk's combined state or its reason changed."""

    trunk: str
    state: TrunkState
    reason: str
    """Why it is not up ("" when up), e.g. "peer dead (DPD)"."""
    protected: bool
    """At least one CHILD_SA of the trunk is installed."""


_NOTIFY_REASONS = {
    NotifyType.AUTHENTICATION_FAILED: "auth failed",
    NotifyType.NO_PROPOSAL_CHOSEN: "no proposal chosen",
    NotifyType.TS_UNACCEPTABLE: "traffic selectors refused",
}


@dataclass(slots=True)
class _Peering:
    """One IKE connection of a trunk."""

    children: set[int] = field(default_factory=set)
    """Inbound SPIs of its installed CHILD_SAs."""
    reason: str = "no IKE_SA yet"
    """Why it has no CHILD_SA (meaningful while ``children`` is empty)."""


@dataclass(slots=True)
class _Trunk:
    peerings: dict[str, _Peering]
    keepalive_down: bool = False
    targets_down: set[str] = field(default_factory=set)


class ProtectionTracker:
    """Feeds on daemon and keepalive events; reports state changes."""

    def __init__(self) -> None:
        self._trunks: dict[str, _Trunk] = {}
        self._trunk_of: dict[str, str] = {}
        self._published: dict[str, SecureTrunkStateChanged] = {}
        self.unprotected: set[str] = set()
        """Trunks with no CHILD_SA at all, updated in place after every
        input: the call engine holds this very set and routing skips them."""

    def configure(self, connections: Iterable[tuple[str, str]]) -> None:
        """Track these (trunk, connection name) pairs; what a connection
        already knew survives, connections not listed are forgotten."""
        trunks: dict[str, _Trunk] = {}
        for trunk, name in connections:
            old = self._trunks.get(trunk)
            entry = trunks.get(trunk)
            if entry is None:
                entry = trunks[trunk] = _Trunk({})
                if old is not None:
                    entry.keepalive_down = old.keepalive_down
                    entry.targets_down = set(old.targets_down)
            previous = old.peerings.get(name) if old is not None else None
            entry.peerings[name] = previous or _Peering()
        self._trunks = trunks
        self._trunk_of = {
            name: trunk for trunk, entry in trunks.items() for name in entry.peerings
        }
        self._published = {
            trunk: event for trunk, event in self._published.items() if trunk in trunks
        }
        self._refresh()

    # -- inputs ----------------------------------------------------------

    def on_daemon_event(self, event: DaemonEvent) -> None:
        peering = self._peering(event.connection)
        if peering is None:
            return
        if isinstance(event, ChildSaInstalled):
            peering.children.add(event.inbound_spi)
        elif isinstance(event, ChildSaRemoved):
            peering.children.discard(event.inbound_spi)
            peering.reason = f"no CHILD_SA ({event.reason})"
        elif isinstance(event, ChildSaRefused):
            if not peering.children:
                peering.reason = f"CHILD_SA refused: {event.reason}"
        elif isinstance(event, IkeSaDown):
            if not peering.children:
                peering.reason = _ike_sa_down_reason(event)
        elif isinstance(event, PeerDead):
            peering.reason = "peer dead (DPD)"
        self._refresh()

    def on_keepalive_event(self, event: KeepaliveEvent) -> None:
        if isinstance(event, TargetWentDown | TargetCameUp):
            entry = self._trunks.get(event.target.trunk)
            if entry is None:
                return
            where = f"{event.target.host}:{event.target.port}"
            if isinstance(event, TargetWentDown):
                entry.targets_down.add(where)
            else:
                entry.targets_down.discard(where)
            return
        entry = self._trunks.get(event.trunk)
        if entry is not None:
            entry.keepalive_down = isinstance(event, TrunkWentDown)

    # -- outputs ---------------------------------------------------------

    def state(self, trunk: str) -> SecureTrunkStateChanged | None:
        """The trunk's state now; None for a trunk that is not protected."""
        entry = self._trunks.get(trunk)
        return None if entry is None else _combined(trunk, entry)

    def changes(self) -> list[SecureTrunkStateChanged]:
        """States that differ from the last ones returned (first call: all)."""
        changed = []
        for trunk, entry in self._trunks.items():
            now = _combined(trunk, entry)
            if self._published.get(trunk) != now:
                self._published[trunk] = now
                changed.append(now)
        return changed

    def _refresh(self) -> None:
        down = {
            trunk
            for trunk, entry in self._trunks.items()
            if not any(p.children for p in entry.peerings.values())
        }
        self.unprotected &= down
        self.unprotected |= down

    def _peering(self, connection: str) -> _Peering | None:
        trunk = self._trunk_of.get(connection)
        return None if trunk is None else self._trunks[trunk].peerings[connection]


def _ike_sa_down_reason(event: IkeSaDown) -> str:
    if event.notify_type in _NOTIFY_REASONS:
        return _NOTIFY_REASONS[NotifyType(event.notify_type)]
    return f"IKE_SA down: {event.reason}"


def _combined(trunk: str, entry: _Trunk) -> SecureTrunkStateChanged:
    peerings = entry.peerings
    missing = [name for name, p in peerings.items() if not p.children]
    protected = len(missing) < len(peerings)
    if not protected:
        reason = peerings[missing[0]].reason if missing else "no IKE peer"
        return SecureTrunkStateChanged(trunk, TrunkState.DOWN, reason, False)
    if entry.keepalive_down:
        reason = "no answer to OPTIONS"
        return SecureTrunkStateChanged(trunk, TrunkState.DOWN, reason, True)
    problems = [f"{name}: {peerings[name].reason}" for name in missing]
    problems += [
        f"{target} not answering OPTIONS" for target in sorted(entry.targets_down)
    ]
    if problems:
        return SecureTrunkStateChanged(
            trunk, TrunkState.DEGRADED, "; ".join(problems), True
        )
    return SecureTrunkStateChanged(trunk, TrunkState.UP, "", True)
