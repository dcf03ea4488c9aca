"""Secure trunks at run time: one data plane and one IKE daemon per node.

:class:`SecureTrunks` turns the configuration's protected trunks (and mesh
peers) into IKE connections (:mod:`sbc.secure.derive`), runs them, and
follows their SAs into per-trunk states (:mod:`sbc.secure.state`). The SIP
and media glue bind their channel endpoints on :attr:`SecureTrunks.data_plane`;
routing skips the trunks in :attr:`SecureTrunks.unprotected`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ipsec.dataplane import DataPlane, UnknownSA
from ipsec.esp.lifetime import SACounters
from ipsec.esp.spd import TrafficSelector as PolicySelector
from ipsec.ike.connection import ConnectionDefinition, StartAction
from ipsec.ike.crypto import RandomBytes
from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRemoved,
    DaemonEvent,
    DaemonSettings,
    IkeDaemon,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
)
from ipsec.ike.manager import InstalledChild, ManagedIkeSa
from sbc.b2bua.keepalive import KeepaliveEvent
from sbc.config.ipsec import IpsecNode
from sbc.config.model import Config

from .derive import NodeSectionMissing, TrunkConnection, protected_connections
from .exchange_counts import ExchangeCounts
from .state import ProtectionTracker, SecureTrunkStateChanged

_log = logging.getLogger("sbc.secure")

SecureEvent = SecureTrunkStateChanged | DaemonEvent
"""What subscribers receive: trunk states and the daemon's SA events."""
Subscriber = Callable[[SecureEvent], None]

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds before initiating again a connection this node starts, after
each failed attempt in a row (the last one repeats)."""

STOP_WAIT = 2.0
"""How long :meth:`SecureTrunks.stop` waits for the peers to answer the
Deletes before it removes the SAs anyway."""


class RestartRequired(ValueError):
    """The change moves IKE's sockets, which cannot happen while serving."""


@dataclass(frozen=True, slots=True)
class ChildSaView:
    """One installed CHILD_SA, as the admin plane shows it."""

    inbound_spi: str
    outbound_spi: str
    encryption: str
    integrity: str
    esn: bool
    mode: str
    encapsulated: bool
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    established: float | None
    """Unix time it was installed (None: before this runtime saw it)."""
    rekey_due: float | None
    """Latest Unix time of its rekey (rekeys come up to 10 % early)."""


@dataclass(frozen=True, slots=True)
class IkeSaView:
    """One IKE_SA of a protected trunk, with its CHILD_SAs."""

    trunk: str
    connection: str
    peer: str
    spi_i: str
    spi_r: str
    initiator: bool
    established: bool
    encryption: str | None
    prf: str | None
    integrity: str | None
    dh_group: str | None
    established_at: float | None
    rekey_due: float | None
    children: tuple[ChildSaView, ...]


@dataclass(frozen=True, slots=True)
class _Seen:
    """What an SA's establishing event said, kept for the views."""

    when: float
    algorithms: tuple[str, ...]
    encapsulated: bool


class SecureTrunks:
    """The IPsec side of one node: start, apply, stop, views and actions."""

    def __init__(
        self,
        *,
        random_bytes: RandomBytes = secrets.token_bytes,
        clock: Callable[[], float] = time.time,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self._random_bytes = random_bytes
        self._clock = clock
        self._retry_delays = retry_delays
        self._attempts: dict[str, int] = {}
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}
        self._held: set[str] = set()
        """Connections an operator terminated: not set up again on their own."""
        self._plane: DataPlane | None = None
        self._daemon: IkeDaemon | None = None
        self._node: IpsecNode | None = None
        self._connections: dict[str, TrunkConnection] = {}
        self._tracker = ProtectionTracker()
        self._subscribers: list[Subscriber] = []
        self._flush_pending = False
        self._ike_seen: dict[tuple[bytes, bytes], _Seen] = {}
        self._child_seen: dict[int, _Seen] = {}
        self._counts = ExchangeCounts()

    # -- lifecycle -------------------------------------------------------

    async def start(self, config: Config) -> None:
        """Open IKE's sockets on the node's address and load every connection.

        Raises :class:`NodeSectionMissing` without an ``ipsec`` section,
        OSError when a socket cannot be bound.
        """
        if self._daemon is not None:
            raise RuntimeError("SecureTrunks is started already")
        node = config.ipsec
        if node is None:
            raise NodeSectionMissing(
                "IPsec profiles need the ipsec section (this node's IKE address)"
            )
        connections = _by_name(protected_connections(config))
        plane = DataPlane(asyncio.get_running_loop())
        settings = DaemonSettings(
            str(node.address), ike_port=node.ike_port, nat_t_port=node.nat_t_port
        )
        daemon = IkeDaemon(plane, settings, random_bytes=self._random_bytes)
        daemon.subscribe(self._on_daemon_event)
        # In place before the daemon starts: its first events may come at once.
        self._plane, self._daemon, self._node = plane, daemon, node
        self._connections = connections
        self._track(connections)
        for connection in connections.values():
            daemon.load(connection.definition)
        try:
            daemon.start()
        except BaseException:
            daemon.close()
            plane.close()
            self._plane = self._daemon = self._node = None
            self._connections = {}
            raise
        _log.info(
            "IPsec on %s (IKE %d, NAT-T %d): %d connections",
            node.address, daemon.ike_port, daemon.nat_t_port, len(connections),
        )  # fmt: skip
        self._flush()

    async def apply(self, config: Config) -> None:
        """Run ``config``'s connections: new ones loaded, removed ones
        terminated (their SAs deleted), changed ones set up afresh; the SAs
        of unchanged connections are left alone.

        Raises :class:`RestartRequired` when the node's address or ports
        change, :class:`NodeSectionMissing` when protected trunks remain
        without the section, before anything is touched. Without the
        section and protected trunks, every connection goes and the sockets
        stay open until :meth:`stop`.
        """
        daemon = self._running()
        new = _by_name(protected_connections(config))
        node = config.ipsec or self._node
        if _sockets(node) != _sockets(self._node):
            raise RestartRequired(
                "the ipsec section's address or ports changed: restart the node"
            )
        old = self._connections
        self._track(new)
        for name in old.keys() - new.keys():
            self._unload(daemon, name)
        for name, connection in new.items():
            previous = old.get(name)
            if previous is None:
                daemon.load(connection.definition)
            elif _fingerprint(previous) != _fingerprint(connection):
                self._renew(daemon, connection.definition)
        self._node, self._connections = node, new
        self._flush()

    async def stop(self, wait: float = STOP_WAIT) -> None:
        """Delete every IKE_SA with its peer (waiting at most ``wait``
        seconds for the answers), then close the sockets."""
        daemon, plane = self._daemon, self._plane
        if daemon is None or plane is None:
            return
        # Unloaded first: a peer answering our Delete with a new IKE_SA
        # (its close_action) must find nothing to set up.
        for name in self._connections:
            self._unload(daemon, name)
        self._connections = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while daemon.ike_sas() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        daemon.close()
        plane.close()
        self._daemon = self._plane = None

    # -- the glue's side -------------------------------------------------

    @property
    def data_plane(self) -> DataPlane:
        """Where protected listeners and media legs bind (after start)."""
        if self._plane is None:
            raise RuntimeError("SecureTrunks is not started")
        return self._plane

    @property
    def unprotected(self) -> set[str]:
        """Protected trunks without any CHILD_SA, a set kept up to date in
        place: hand it once to the call engine (``unprotected_trunks``)."""
        return self._tracker.unprotected

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with every later event (it must not raise)."""
        self._subscribers.append(subscriber)

    def keepalive_event(self, event: KeepaliveEvent) -> None:
        """Feed an OPTIONS keepalive result into the trunks' states."""
        self._tracker.on_keepalive_event(event)
        self._flush_soon()

    def trunk_state(self, trunk: str) -> SecureTrunkStateChanged | None:
        """A protected trunk's state; None when the trunk is not protected."""
        return self._tracker.state(trunk)

    def trunk_states(self) -> list[SecureTrunkStateChanged]:
        names = dict.fromkeys(c.trunk for c in self._connections.values())
        return [s for name in names if (s := self._tracker.state(name)) is not None]

    # -- actions ---------------------------------------------------------

    def initiate(self, trunk: str) -> int:
        """Set up an IKE_SA to each peer of ``trunk`` that has none; how many."""
        daemon = self._running()
        started = 0
        for name in self._names_of(trunk):
            self._held.discard(name)
            if not daemon.ike_sas(name):
                daemon.initiate(name)
                started += 1
        return started

    def terminate(self, trunk: str) -> int:
        """Delete the IKE_SAs of ``trunk`` (and their CHILD_SAs); how many."""
        daemon = self._running()
        names = self._names_of(trunk)
        for name in names:
            self._held.add(name)
            self._cancel_retry(name)
        return sum(daemon.terminate(name) for name in names)

    def renew(self, trunk: str) -> int:
        """New keys for every SA of ``trunk``, make-before-break: each IKE_SA
        is reauthenticated (new IKE_SA and CHILD_SA, then the old ones
        deleted). Returns how many started."""
        daemon = self._running()
        return sum(daemon.reauthenticate(name) for name in self._names_of(trunk))

    def rekey(self, trunk: str, *, ike: bool = False) -> int:
        """Rekey the CHILD_SAs of ``trunk`` now (or, with ``ike``, its
        IKE_SAs), make-before-break. Returns how many rekeys started."""
        daemon = self._running()
        return sum(daemon.rekey(name, ike=ike) for name in self._names_of(trunk))

    # -- views -----------------------------------------------------------

    def sa_views(self, trunk: str | None = None) -> list[IkeSaView]:
        """The live IKE_SAs (of one trunk or of all) with their CHILD_SAs."""
        daemon = self._daemon
        if daemon is None:
            return []
        views = []
        for name, connection in self._connections.items():
            if trunk in (None, connection.trunk):
                views += [self._ike_view(connection, sa) for sa in daemon.ike_sas(name)]
        return views

    def security_associations(self) -> list[dict[str, Any]]:
        """:meth:`sa_views` as plain data, for the admin plane."""
        return [dataclasses.asdict(view) for view in self.sa_views()]

    def trunk_protection(self) -> dict[str, str]:
        """Each protected trunk's state, with its reason when not up."""
        return {
            state.trunk: f"{state.state}: {state.reason}"
            if state.reason
            else str(state.state)
            for state in self.trunk_states()
        }

    def call_identifiers(self, trunk: str) -> dict[str, Any] | None:
        """The SAs a call on ``trunk`` uses now, for its call record: the
        IKE_SA's SPIs and algorithms, the CHILD_SA's SPIs and algorithms
        (the first peer's with several); None when the trunk is unprotected
        or has no CHILD_SA."""
        views = [view for view in self.sa_views(trunk) if view.children]
        if not views:
            return None
        ike = views[0]
        child = ike.children[-1]
        return {
            "ike_sa": f"{ike.spi_i}_{ike.spi_r}",
            "ike_algorithms": [ike.encryption, ike.prf, ike.integrity, ike.dh_group],
            "child_sa": {"in": child.inbound_spi, "out": child.outbound_spi},
            "esp_algorithms": [child.encryption, child.integrity],
            "mode": child.mode,
        }

    def snapshot(self) -> dict[str, Any]:
        """Counters for metrics: ``ike`` (IKE_SAs, drops) and ``ipsec``
        (the data plane's paths and SAs)."""
        daemon, plane = self._daemon, self._plane
        if daemon is None or plane is None:
            return {}
        sas = daemon.ike_sas()
        ike = {
            "ike_sas": len(sas),
            "established": sum(sa.established for sa in sas),
            "child_sas": sum(len(sa.children) for sa in sas),
            "drops": dict(daemon.drops),
            **self._counts.snapshot(),
        }
        return {"ike": ike, "ipsec": plane.stats()}

    async def tunnel_action(self, name: str, action: str) -> None:
        """``initiate``, ``terminate`` or ``rekey`` (its CHILD_SAs, with a
        CREATE_CHILD_SA exchange each) the IPsec of trunk or mesh peer
        ``name``; LookupError for an unprotected name, ValueError for
        another action."""
        actions: dict[str, Callable[[str], int]] = {
            "initiate": self.initiate,
            "terminate": self.terminate,
            "rekey": self.rekey,
        }
        if action not in actions:
            raise ValueError(f"unknown tunnel action {action!r}")
        actions[action](name)

    def _ike_view(self, connection: TrunkConnection, sa: ManagedIkeSa) -> IkeSaView:
        engine = sa.engine
        seen = self._ike_seen.get((engine.spi_i, engine.spi_r))
        encryption, prf, integrity, group = seen.algorithms if seen else ("",) * 4
        return IkeSaView(
            trunk=connection.trunk,
            connection=connection.definition.name,
            peer=f"{sa.remote[0]}:{sa.remote[1]}",
            spi_i=engine.spi_i.hex(),
            spi_r=engine.spi_r.hex(),
            initiator=sa.is_initiator,
            established=sa.established,
            encryption=encryption or None,
            prf=prf or None,
            integrity=integrity or None,
            dh_group=group or None,
            established_at=seen.when if seen else None,
            rekey_due=_due(seen, connection.definition.ike_rekey_time),
            children=tuple(self._child_view(connection, c) for c in sa.children),
        )

    def _child_view(
        self, connection: TrunkConnection, child: InstalledChild
    ) -> ChildSaView:
        seen = self._child_seen.get(child.inbound_spi)
        encryption, integrity, esn, mode = seen.algorithms if seen else ("",) * 4
        plane = self.data_plane
        try:
            inbound = plane.counters(child.inbound_spi, inbound=True)
            outbound = plane.counters(child.outbound_spi, inbound=False)
        except UnknownSA:
            inbound = outbound = SACounters()
        return ChildSaView(
            inbound_spi=f"{child.inbound_spi:08x}",
            outbound_spi=f"{child.outbound_spi:08x}",
            encryption=encryption,
            integrity=integrity,
            esn=esn == "esn",
            mode=mode,
            encapsulated=seen.encapsulated if seen else True,
            local_ts=tuple(map(_selector_text, child.local_selectors)),
            remote_ts=tuple(map(_selector_text, child.remote_selectors)),
            packets_in=inbound.packets,
            bytes_in=inbound.bytes,
            packets_out=outbound.packets,
            bytes_out=outbound.bytes,
            established=seen.when if seen else None,
            rekey_due=_due(seen, connection.definition.child.rekey_time),
        )

    # -- events ----------------------------------------------------------

    def _on_daemon_event(self, event: DaemonEvent) -> None:
        now = self._clock()
        if isinstance(event, IkeSaUp):
            algorithms = (
                f"{event.encr.encr_id.name}_{event.encr.key_length}"
                if event.encr.key_length
                else event.encr.encr_id.name,
                event.prf.prf_id.name,
                event.integ.integ_id.name if event.integ else "NONE",
                event.dh_group.name,
            )
            seen = _Seen(now, algorithms, event.encapsulated)
            self._ike_seen[(event.spi_i, event.spi_r)] = seen
        elif isinstance(event, IkeSaRekeyed):
            # The new IKE_SA was negotiated from the same proposals; its
            # establishment is now.
            old = self._ike_seen.pop((event.spi_i, event.spi_r), None)
            if old is not None:
                new = replace(old, when=now)
                self._ike_seen[(event.new_spi_i, event.new_spi_r)] = new
        elif isinstance(event, ChildSaInstalled):
            algorithms = (
                event.encryption.name,
                event.integrity.name,
                "esn" if event.esn else "noesn",
                event.mode.value,
            )
            seen = _Seen(now, algorithms, event.encapsulated)
            self._child_seen[event.inbound_spi] = seen
        self._counts.on_daemon_event(event)
        self._forget_gone(event)
        self._follow_up(event)
        self._tracker.on_daemon_event(event)
        for subscriber in self._subscribers:
            subscriber(event)
        self._flush_soon()

    def _forget_gone(self, event: DaemonEvent) -> None:
        if isinstance(event, ChildSaRemoved):
            self._child_seen.pop(event.inbound_spi, None)
        elif isinstance(event, IkeSaDown):
            self._ike_seen.pop((event.spi_i, event.spi_r), None)

    def _follow_up(self, event: DaemonEvent) -> None:
        """Keep the connections this node starts coming back: the daemon
        tries once more (a DPD restart), the rest is up to us, with a
        growing delay between failed attempts."""
        name = event.connection
        if isinstance(event, IkeSaUp):
            self._cancel_retry(name)
            self._attempts.pop(name, None)
            return
        connection = self._connections.get(name)
        daemon = self._daemon
        if not isinstance(event, IkeSaDown) or connection is None or daemon is None:
            return
        starts = connection.definition.start_action is StartAction.START
        waiting = name in self._held or name in self._retry_timers
        if starts and not waiting and not daemon.ike_sas(name):
            attempt = self._attempts.get(name, 0)
            self._attempts[name] = attempt + 1
            delay = self._retry_delays[min(attempt, len(self._retry_delays) - 1)]
            loop = asyncio.get_running_loop()
            self._retry_timers[name] = loop.call_later(delay, self._retry, name)

    def _retry(self, name: str) -> None:
        self._retry_timers.pop(name, None)
        daemon = self._daemon
        if daemon is None or name not in self._connections or name in self._held:
            return
        # A DPD restart or the peer may have set one up meanwhile.
        if not daemon.ike_sas(name):
            _log.info("%s: setting up again", name)
            daemon.initiate(name)

    def _cancel_retry(self, name: str) -> None:
        handle = self._retry_timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _flush_soon(self) -> None:
        # The daemon reports one loss as several events in one call (CHILD_SA
        # removed, IKE_SA down, peer dead): publish the state they leave.
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        for change in self._tracker.changes():
            _log.info(
                "trunk %s %s%s",
                change.trunk,
                change.state,
                f" ({change.reason})" if change.reason else "",
            )
            for subscriber in self._subscribers:
                subscriber(change)

    # -- helpers ---------------------------------------------------------

    def _running(self) -> IkeDaemon:
        if self._daemon is None:
            raise RuntimeError("SecureTrunks is not started")
        return self._daemon

    def _names_of(self, trunk: str) -> list[str]:
        names = [n for n, c in self._connections.items() if c.trunk == trunk]
        if not names:
            raise KeyError(f"trunk {trunk!r} is not protected")
        return names

    def _track(self, connections: dict[str, TrunkConnection]) -> None:
        self._tracker.configure((c.trunk, name) for name, c in connections.items())

    def _unload(self, daemon: IkeDaemon, name: str) -> None:
        self._cancel_retry(name)
        self._held.discard(name)
        daemon.unload(name)

    def _renew(self, daemon: IkeDaemon, definition: ConnectionDefinition) -> None:
        """Run a changed definition. On the side that starts the connection,
        where an IKE_SA is up the new one is
        set up beside it and the old one deleted only once the new CHILD_SA
        is in place (reauthentication, RFC 7296 §2.8.3); it is retried
        while the peer refuses the change, the old SAs staying in use."""
        name = definition.name
        if definition.start_action is not StartAction.START:
            # The side that starts carries the change; if both renewed, two
            # CHILD_SAs with the same selectors would be left side by side.
            daemon.load(definition)
            return
        if not any(sa.established for sa in daemon.ike_sas(name)):
            daemon.terminate(name)
            daemon.load(definition)
            return
        # Loaded without START, which would add an IKE_SA with
        # INITIAL_CONTACT and make the peer drop the old one at once.
        daemon.load(replace(definition, start_action=StartAction.NONE))
        daemon.reauthenticate(name)


def node_runtime(publish: Callable[[object], None]) -> SecureTrunks:
    """The runtime `sbc.node.Node` builds (its ``secure_runtime`` factory);
    every event goes to ``publish``, the node's bus."""
    secure = SecureTrunks()
    secure.subscribe(publish)
    return secure


def _by_name(connections: list[TrunkConnection]) -> dict[str, TrunkConnection]:
    return {c.definition.name: c for c in connections}


def _sockets(node: IpsecNode | None) -> tuple[object, ...]:
    if node is None:
        return ()
    return (node.address, node.ike_port, node.nat_t_port)


def _fingerprint(connection: TrunkConnection) -> tuple[object, ...]:
    """What decides whether a connection's SAs must be set up afresh.

    Certificates load into new objects on every derivation, so their PEM
    text stands in for them.
    """
    return (replace(connection.definition, certificates=None), connection.credentials)


def _due(seen: _Seen | None, lifetime: float | None) -> float | None:
    if seen is None or lifetime is None:
        return None
    return seen.when + lifetime


def _selector_text(selector: PolicySelector) -> str:
    start, end = selector.start_address, selector.end_address
    return str(start) if start == end else f"{start}-{end}"
