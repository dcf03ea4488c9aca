"""The IKEv2 daemon: sans-IO IKE_SA engines on asyncio, CHILD_SAs into ESP.

The daemon owns two sockets of one local address: UDP 500 for IKE, and the
data plane's RFC 3948 socket on 4500, where IKE travels behind the non-ESP
marker next to ESP. It finds the IKE_SA of every datagram through the
:class:`~ipsec.ike.manager.IkeSaManager`, feeds the engine with the loop's
time, sends what the engine returns, and re-arms one timer per IKE_SA from
``get_timer()``. Requests are answered to the address and port they came
from (RFC 7296 §2.11); our own requests go to where the peer was last
heard. After NAT detection, or when UDP encapsulation is forced, the
initiator floats to port 4500 (RFC 7296 §2.23).

A CHILD_SA the engine reports is installed through the data plane's narrow
interface (add_sa both ways, one outbound and one inbound policy per
selector pair) and removed when its IKE_SA fails or is terminated.

The connection lifecycle follows swanctl: ``start_action = trap`` installs
TRAP policies whose first caught packet initiates; ``close_action`` says
what a Delete from the peer leads to; ``reauth_time`` replaces the IKE_SA
with a freshly authenticated one, make-before-break (RFC 7296 §2.8.3).
Subscribers receive typed past-tense events; the daemon logs SPIs and
algorithm names, never keys. Keys reach a file only through the opt-in key
logs (SBC_IPSEC_KEYLOG for ESP, SBC_IKE_KEYLOG for IKE).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from ipsec.dataplane import (
    Acquire,
    DataPlane,
    DataPlaneError,
    Transport,
    UdpEncapSocket,
)
from ipsec.esp import Encryption, Integrity, Mode, Protocol
from ipsec.esp.spd import Direction, Policy, PolicyAction
from ipsec.esp.spd import TrafficSelector as PolicySelector

from .connection import (
    IKE_PORT,
    NAT_T_PORT,
    ChildSaInstallation,
    CloseAction,
    ConnectionDefinition,
    StartAction,
    child_sa_installation,
)
from .constants import DhGroup, ExchangeType, NotifyType
from .cookies import CookieJar
from .crypto import EncrAlgorithm, IntegAlgorithm, PrfAlgorithm, RandomBytes
from .errors import IkeError
from .events import (
    ChildSaDeleted,
    ChildSaDeleteReason,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaOutboundSwitched,
    ChildSaRekeyFailed,
    IkeSaCreatedByRekey,
    IkeSaDeleted,
    IkeSaDeleteReason,
    IkeSaEstablished,
    IkeSaFailed,
    IkeSaRekeyFailed,
    InitialContactReceived,
)
from .events import IkeSaRekeyed as _ChildSasMoved
from .ike_sa import IkeSa, IkeSaState
from .keylog import IkeKeyLog
from .manager import HalfOpenLimitReached, IkeSaManager, InstalledChild, ManagedIkeSa
from .message import IkeHeader, decode_header
from .tasks.base import Endpoint

logger = logging.getLogger("ipsec.ike.daemon")

IPAddress = IPv4Address | IPv6Address
_SPI_ZERO = bytes(8)
_RECEIVE_SIZE = 65535
_READ_BUDGET = 64


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """Where the daemon listens and how much unauthenticated state it keeps."""

    host: str
    """The local address both sockets bind (a concrete address: NAT
    detection hashes it)."""
    ike_port: int = IKE_PORT
    """0 picks a free port (tests)."""
    nat_t_port: int = NAT_T_PORT
    max_half_open: int = 128
    """Responder IKE_SAs not yet authenticated; more IKE_SA_INITs are dropped."""
    half_open_timeout: float = 30.0
    """A responder IKE_SA not authenticated by then is forgotten."""
    cookie_threshold: int = 32
    """From this many half-open IKE_SAs on, a fresh IKE_SA_INIT must carry a
    valid N(COOKIE) (RFC 7296 §2.6); 0 always asks for one."""
    cookie_secret_lifetime: float = 60.0
    """How often the COOKIE secret is replaced."""
    trap_retry_delay: float = 5.0
    """After a failed setup, a trap ignores packets this long, so that a
    refusing peer is not asked again for every packet."""


# ---------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class IkeSaUp:
    """An IKE_SA was authenticated."""

    connection: str
    spi_i: bytes
    spi_r: bytes
    is_initiator: bool
    encr: EncrAlgorithm
    prf: PrfAlgorithm
    integ: IntegAlgorithm | None
    dh_group: DhGroup
    remote: Endpoint
    encapsulated: bool
    """The IKE_SA and its CHILD_SAs use UDP port 4500 (NAT found or forced)."""


@dataclass(frozen=True, slots=True)
class IkeSaDown:
    """An IKE_SA failed, was refused, deleted by either peer or timed out."""

    connection: str
    spi_i: bytes
    spi_r: bytes
    notify_type: NotifyType | int | None
    reason: str


@dataclass(frozen=True, slots=True)
class IkeSaRekeyed:
    """A rekey replaced an IKE_SA; its CHILD_SAs now belong to the new one."""

    connection: str
    spi_i: bytes
    spi_r: bytes
    new_spi_i: bytes
    new_spi_r: bytes


@dataclass(frozen=True, slots=True)
class IkeSaRekeyRefused:
    """The peer refused our IKE_SA rekey; the IKE_SA stays as it was."""

    connection: str
    spi_i: bytes
    spi_r: bytes
    notify_type: NotifyType | int
    reason: str


@dataclass(frozen=True, slots=True)
class PeerDead:
    """An established IKE_SA's peer stopped answering our requests."""

    connection: str
    spi_i: bytes
    spi_r: bytes


@dataclass(frozen=True, slots=True)
class ChildSaInstalled:
    """Both SAs and the policies of a CHILD_SA are in the data plane."""

    connection: str
    child: str
    inbound_spi: int
    outbound_spi: int
    encryption: Encryption
    integrity: Integrity
    esn: bool
    mode: Mode
    encapsulated: bool
    local_ts: tuple[PolicySelector, ...]
    remote_ts: tuple[PolicySelector, ...]
    rekeyed_spi: int | None = None
    """Our inbound SPI of the CHILD_SA this one replaces (a rekey)."""


@dataclass(frozen=True, slots=True)
class ChildSaRefused:
    """The CHILD_SA was refused (by either peer) or could not be installed."""

    connection: str
    child: str
    notify_type: NotifyType | int | None
    reason: str


@dataclass(frozen=True, slots=True)
class ChildSaRemoved:
    """A CHILD_SA's SAs and policies left the data plane."""

    connection: str
    child: str
    inbound_spi: int
    outbound_spi: int
    reason: str


@dataclass(frozen=True, slots=True)
class TrapInstalled:
    """A connection's TRAP policies are in the data plane."""

    connection: str
    selectors: tuple[tuple[PolicySelector, PolicySelector], ...]
    """(local, remote) of each trap policy."""


@dataclass(frozen=True, slots=True)
class TrapRemoved:
    """A connection's TRAP policies left the data plane."""

    connection: str


@dataclass(frozen=True, slots=True)
class TrapTriggered:
    """A packet a trap caught started a negotiation (once, not per packet)."""

    connection: str
    protocol: int
    source: IPAddress
    destination: IPAddress
    source_port: int
    destination_port: int
    new_ike_sa: bool
    """True: a new IKE_SA was initiated; False: a CHILD_SA was requested on
    the connection's established IKE_SA."""


@dataclass(frozen=True, slots=True)
class CloseActionTaken:
    """The peer deleted the connection's last CHILD_SA or its IKE_SA, and
    ``close_action`` (trap or start) was applied."""

    connection: str
    action: CloseAction
    spi_i: bytes
    spi_r: bytes
    """The IKE_SA the peer deleted, or the one whose CHILD_SA it deleted."""
    ike_sa_deleted: bool


@dataclass(frozen=True, slots=True)
class IkeSaReauthenticated:
    """A new, fully authenticated IKE_SA carries the connection's CHILD_SA;
    the old IKE_SA (spi_i, spi_r) is being deleted (RFC 7296 §2.8.3)."""

    connection: str
    spi_i: bytes
    spi_r: bytes
    new_spi_i: bytes
    new_spi_r: bytes


@dataclass(frozen=True, slots=True)
class IkeSaReauthFailed:
    """The IKE_SA meant to replace (spi_i, spi_r) failed; the old one stays
    in use and reauthentication is tried again after retransmit_timeout."""

    connection: str
    spi_i: bytes
    spi_r: bytes
    notify_type: NotifyType | int | None
    """The error Notify that ended the new IKE_SA or CHILD_SA, if any."""
    reason: str


DaemonEvent = (
    IkeSaUp
    | IkeSaDown
    | IkeSaRekeyed
    | IkeSaRekeyRefused
    | PeerDead
    | ChildSaInstalled
    | ChildSaRefused
    | ChildSaRemoved
    | TrapInstalled
    | TrapRemoved
    | TrapTriggered
    | CloseActionTaken
    | IkeSaReauthenticated
    | IkeSaReauthFailed
)
Subscriber = Callable[[DaemonEvent], None]


# ---------------------------------------------------------------------------
# The daemon


class IkeDaemon:
    """Runs connection definitions on one local address.

    Build it, :meth:`load` connections, then :meth:`start` (or start first:
    loading a ``StartAction.START`` connection into a started daemon
    initiates it at once). ``random_bytes`` feeds SPIs, nonces and DH keys
    (default: the secrets module).
    """

    def __init__(
        self,
        dataplane: DataPlane,
        settings: DaemonSettings,
        *,
        random_bytes: RandomBytes = secrets.token_bytes,
        keylog: IkeKeyLog | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.settings = settings
        self.loop = dataplane.loop
        self.address: IPAddress = ip_address(settings.host)
        self.manager = IkeSaManager(settings.max_half_open)
        self.connections: dict[str, ConnectionDefinition] = {}
        self.drops: Counter[str] = Counter()
        """Datagrams no IKE_SA took, by reason (attacker-controlled)."""
        self._random_bytes = random_bytes
        self._cookies = CookieJar(
            random_bytes, self.loop.time(), settings.cookie_secret_lifetime
        )
        self._keylog = keylog or IkeKeyLog.from_environment()
        self._subscribers: list[Subscriber] = []
        self._timers: dict[ManagedIkeSa, asyncio.TimerHandle] = {}
        self._traps: dict[str, list[Policy]] = {}
        self._trap_hold: dict[str, float] = {}
        """Connection name: until when its trap ignores packets."""
        self._socket: socket.socket | None = None
        self._encap: UdpEncapSocket | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Open UDP 500 and the shared 4500 socket, then start connections."""
        family = socket.AF_INET6 if self.address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.settings.host, self.settings.ike_port))
            self._encap = self.dataplane.open_udp_encap(
                self.settings.host, self.settings.nat_t_port
            )
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self.loop.add_reader(sock.fileno(), self._on_ike_readable)
        self.dataplane.set_ike_handler(self._on_nat_t_message)
        self.dataplane.set_acquire_handler(self._on_acquire)
        for connection in list(self.connections.values()):
            self._apply_start_action(connection)

    def close(self) -> None:
        """Remove every CHILD_SA from the data plane and close UDP 500.

        No Deletes are sent; trap policies are removed too. The 4500 socket
        belongs to the data plane and closes with it.
        """
        for sa in self.manager:
            self._remove(sa, None, "daemon closed")
        for name in list(self._traps):
            self.uninstall_trap(name)
        self.dataplane.set_acquire_handler(None)
        if self._socket is not None:
            self.loop.remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        self.dataplane.set_ike_handler(None)

    @property
    def ike_port(self) -> int:
        """The bound IKE port (useful when the settings asked for 0)."""
        if self._socket is None:
            raise RuntimeError("the daemon is not started")
        return int(self._socket.getsockname()[1])

    @property
    def nat_t_port(self) -> int:
        if self._encap is None:
            raise RuntimeError("the daemon is not started")
        return int(self._encap.local_address[1])

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(event)`` for every daemon event; it must not raise."""
        self._subscribers.append(subscriber)

    def load(self, connection: ConnectionDefinition) -> None:
        """Add or replace a connection; a started daemon acts on start_action.

        Replacing a connection removes its traps first (its selectors may
        have changed); its IKE_SAs stay as they are.
        """
        self.uninstall_trap(connection.name)
        self.connections[connection.name] = connection
        if self._socket is not None:
            self._apply_start_action(connection)

    def _apply_start_action(self, connection: ConnectionDefinition) -> None:
        if connection.start_action is StartAction.START:
            self.initiate(connection.name)
        elif connection.start_action is StartAction.TRAP:
            self.install_trap(connection.name)

    # -- initiating and terminating -------------------------------------------

    def initiate(self, name: str) -> ManagedIkeSa:
        """Start IKE_SA_INIT for connection ``name``, CHILD_SA in IKE_AUTH."""
        return self._initiate(name)

    def _initiate(
        self, name: str, reauth_of: ManagedIkeSa | None = None
    ) -> ManagedIkeSa:
        connection = self.connections[name]
        if connection.remote_address is None:
            raise ValueError(f"connection {name} has no remote address to initiate to")
        local = (self.address, self.ike_port)
        remote = (connection.remote_address, connection.remote_port)
        config = connection.ike_sa_config()
        if reauth_of is not None:
            # The peer must keep the old IKE_SA until we delete it (§2.4).
            config = replace(config, send_initial_contact=False)
        engine = IkeSa(
            config,
            is_initiator=True,
            local_spi=self._new_spi(),
            random_bytes=self._random_bytes,
            local_endpoint=_hashed_endpoint(connection, local),
            remote_endpoint=remote,
            spi_allocator=self._new_child_spi,
        )
        now = self.loop.time()
        sa = ManagedIkeSa(engine, connection, local, remote, True, now)
        self.manager.add(sa)
        if reauth_of is not None:
            sa.reauth_of, reauth_of.replaced_by = reauth_of, sa
        engine.initiate(now)
        logger.info("%s: initiating to %s:%d", sa.label, *remote)
        self._after_step(sa, None)
        return sa

    def terminate(self, name: str) -> int:
        """Delete the IKE_SAs of connection ``name`` and their CHILD_SAs.

        An established IKE_SA is deleted with an INFORMATIONAL Delete (RFC
        7296 §1.4.1) and leaves the data plane once the peer answers (or
        is found dead); one still being set up is dropped at once. Returns
        how many IKE_SAs were affected.
        """
        affected = 0
        for sa in self.manager:
            if sa.connection.name != name:
                continue
            affected += 1
            if sa.engine.state is IkeSaState.ESTABLISHED:
                sa.engine.delete(self.loop.time())
                self._after_step(sa, None)
            else:
                self._remove(sa, None, "terminated locally")
        return affected

    def terminate_child(self, name: str) -> int:
        """Delete the CHILD_SAs of connection ``name`` with INFORMATIONAL
        Deletes; their IKE_SAs stay. Returns how many were asked to go."""
        affected = 0
        for sa in self.ike_sas(name):
            for child in list(sa.children):
                spi = child.inbound_spi.to_bytes(4, "big")
                try:
                    sa.engine.delete_child_sa(spi, self.loop.time())
                except RuntimeError as state:
                    logger.debug("%s: cannot delete the CHILD_SA: %s", sa.label, state)
                    continue
                affected += 1
            self._after_step(sa, None)
        return affected

    def unload(self, name: str) -> int:
        """Forget connection ``name``: its traps go, its IKE_SAs are deleted
        as :meth:`terminate` deletes them, and nothing starts it again.
        Returns how many IKE_SAs were affected."""
        self.uninstall_trap(name)
        self.connections.pop(name, None)
        return self.terminate(name)

    def rekey(self, name: str, *, ike: bool = False) -> int:
        """Rekey connection ``name`` now: its established IKE_SAs (``ike``,
        RFC 7296 §1.3.2) or their CHILD_SAs (§1.3.3), make-before-break as
        timed rekeys are. Returns how many rekeys started."""
        started = 0
        now = self.loop.time()
        for sa in self.ike_sas(name):
            if sa.engine.state is not IkeSaState.ESTABLISHED:
                continue
            spis = [None] if ike else [c.inbound_spi for c in sa.children]
            for spi in spis:
                try:
                    if spi is None:
                        sa.engine.rekey_ike_sa(now)
                    else:
                        sa.engine.rekey_child_sa(spi.to_bytes(4, "big"), now)
                except RuntimeError as state:
                    logger.debug("%s: cannot rekey now: %s", sa.label, state)
                    continue
                started += 1
            self._after_step(sa, None)
        return started

    def ike_sas(self, name: str | None = None) -> list[ManagedIkeSa]:
        """The live IKE_SAs, of one connection or of all."""
        return [sa for sa in self.manager if name in (None, sa.connection.name)]

    # -- traps ---------------------------------------------------------------

    def install_trap(self, name: str) -> bool:
        """Install TRAP policies for connection ``name`` (swanctl --install).

        Returns False if they are installed already. Packets they catch
        raise acquires; they rank below any CHILD_SA's policies and stay
        until :meth:`uninstall_trap`, a reload of the connection or close.
        """
        connection = self.connections[name]
        if name in self._traps:
            return False
        if connection.remote_address is None:
            raise ValueError(f"connection {name} has no remote address to trap for")
        selectors = tuple(connection.trap_selectors())
        self._traps[name] = [
            self.dataplane.add_policy(local, remote, action=PolicyAction.TRAP)
            for local, remote in selectors
        ]
        logger.info("%s: trap installed", name)
        self._emit(TrapInstalled(name, selectors))
        return True

    def uninstall_trap(self, name: str) -> bool:
        """Remove connection ``name``'s TRAP policies; False if there were none."""
        policies = self._traps.pop(name, None)
        if policies is None:
            return False
        for policy in policies:
            self.dataplane.del_policy(policy)
        self._trap_hold.pop(name, None)
        self._emit(TrapRemoved(name))
        return True

    def _on_acquire(self, acquire: Acquire) -> None:
        """A trapped packet: set up its CHILD_SA unless that is under way.

        Every trapped packet arrives here; only the first one while nothing
        is being negotiated starts something.
        """
        name = self._trap_owner(acquire.policy)
        if name is None or self.loop.time() < self._trap_hold.get(name, 0.0):
            return
        sas = self.ike_sas(name)
        if any(not sa.established or sa.children or sa.child_pending for sa in sas):
            # Being negotiated, or a CHILD_SA narrower than the trap exists.
            return
        carrier = next((sa for sa in sas if sa.replaced_by is None), None)
        if carrier is None:
            self.initiate(name)
        elif self._request_child(carrier):
            self._after_step(carrier, None)
        else:
            return
        logger.info("%s: trap triggered by %s", name, acquire.destination)
        self._emit(
            TrapTriggered(
                name, acquire.protocol, acquire.source, acquire.destination,
                acquire.source_port, acquire.destination_port, carrier is None,
            )
        )  # fmt: skip

    def _trap_owner(self, policy: Policy) -> str | None:
        for name, policies in self._traps.items():
            if any(trap is policy for trap in policies):
                return name
        return None

    def _request_child(self, sa: ManagedIkeSa) -> bool:
        """Queue a CREATE_CHILD_SA for the connection's child on ``sa``; the
        caller sends it (an engine step in progress, or :meth:`_after_step`)."""
        try:
            sa.engine.create_child_sa(self.loop.time())
        except RuntimeError as state:
            logger.debug("%s: no CHILD_SA requested: %s", sa.label, state)
            return False
        sa.child_pending = True
        return True

    def _hold_trap(self, name: str) -> None:
        if name in self._traps:
            hold = self.loop.time() + self.settings.trap_retry_delay
            self._trap_hold[name] = hold

    # -- reauthentication (RFC 7296 §2.8.3) ----------------------------------

    def reauthenticate(self, name: str) -> int:
        """Reauthenticate the established IKE_SAs of connection ``name``.

        Each gets a new IKE_SA (IKE_SA_INIT and IKE_AUTH in full, without
        INITIAL_CONTACT); once that one's CHILD_SA is installed and carries
        our traffic, the old IKE_SA is deleted with its CHILD_SAs. Returns
        how many reauthentications started.
        """
        return sum(self._reauthenticate(sa) for sa in self.ike_sas(name))

    def _reauthenticate(self, old: ManagedIkeSa) -> bool:
        connection = self.connections.get(old.connection.name)
        idle = old.replaced_by is None and old.reauth_of is None
        if connection is None or connection.remote_address is None or not idle:
            return False
        if old.engine.state is not IkeSaState.ESTABLISHED:
            return False
        old.reauth_at = None
        new = self._initiate(connection.name, reauth_of=old)
        logger.info("%s: reauthenticating as %s", old.label, new.label)
        self._rearm(old)
        return True

    def _reauth_deadline(self, connection: ConnectionDefinition) -> float | None:
        if connection.reauth_time is None:
            return None
        early = 0.0
        if connection.rand_time > 0:
            draw = int.from_bytes(self._random_bytes(4), "big") / 2**32
            early = connection.rand_time * draw
        return self.loop.time() + connection.reauth_time - early

    def _finish_reauth(self, new: ManagedIkeSa) -> None:
        """The new IKE_SA carries the CHILD_SA: delete the old one."""
        old, new.reauth_of = new.reauth_of, None
        if old is None:
            return
        engine = old.engine
        logger.info("%s: reauthenticated as %s", old.label, new.label)
        self._emit(
            IkeSaReauthenticated(
                new.connection.name, engine.spi_i, engine.spi_r,
                new.engine.spi_i, new.engine.spi_r,
            )
        )  # fmt: skip
        self.loop.call_soon(self._delete_replaced, old)

    def _delete_replaced(self, old: ManagedIkeSa) -> None:
        """Delete an IKE_SA a reauthentication replaced. During an IKE_SA
        rekey this waits: the rekey's outcome brings it back here."""
        if old not in self.manager or old.engine.state is not IkeSaState.ESTABLISHED:
            return
        try:
            old.engine.delete(self.loop.time())
        except RuntimeError as state:
            logger.debug("%s: deletion deferred: %s", old.label, state)
            return
        self._after_step(old, None)

    def _reauth_failed(
        self, new: ManagedIkeSa, notify_type: NotifyType | int | None, reason: str
    ) -> None:
        """The replacement failed: keep the old IKE_SA and try again later."""
        old, new.reauth_of = new.reauth_of, None
        if old is None:
            return
        old.replaced_by = None
        logger.info("%s: reauthentication failed: %s", old.label, reason)
        engine = old.engine
        self._emit(
            IkeSaReauthFailed(
                old.connection.name, engine.spi_i, engine.spi_r, notify_type, reason
            )
        )
        if old in self.manager:
            old.reauth_at = self.loop.time() + old.connection.retransmit_timeout
            self._rearm(old)

    # -- receiving -----------------------------------------------------------

    def _on_ike_readable(self) -> None:
        sock = self._socket
        if sock is None:
            return
        for _ in range(_READ_BUDGET):
            try:
                data, source = sock.recvfrom(_RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # ICMP port unreachable surfaces here; the retransmit timer copes.
                logger.debug("IKE receive error: %s", error)
                return
            self._receive(data, source, floated=False)

    def _on_nat_t_message(self, data: bytes, _local: Any, source: Any) -> None:
        self._receive(data, source, floated=True)

    def _receive(self, data: bytes, source: Any, *, floated: bool) -> None:
        remote = (ip_address(source[0]), int(source[1]))
        try:
            header = decode_header(data)
        except IkeError:
            self.drops["bad IKE header"] += 1
            return
        sa = self.manager.lookup(header, remote) or self._new_responder(
            data, header, remote, floated
        )
        if sa is None:
            return
        # What the IKE_SA itself drops (integrity, window, state) joins the
        # daemon's counts, which outlive it and feed the metrics.
        dropped_before = Counter(sa.engine.drops)
        sa.engine.receive_datagram(data, self.loop.time())
        self.drops.update(sa.engine.drops - dropped_before)
        request = None if header.is_response else (header.message_id, remote, floated)
        self._after_step(sa, request)

    def _new_responder(
        self, data: bytes, header: IkeHeader, remote: Endpoint, floated: bool
    ) -> ManagedIkeSa | None:
        """An IKE_SA for a fresh IKE_SA_INIT request (RFC 7296 §1.2)."""
        fresh = (
            header.exchange_type == ExchangeType.IKE_SA_INIT
            and header.is_initiator
            and not header.is_response
            and header.message_id == 0
            and header.spi_r == _SPI_ZERO
        )
        if not fresh:
            self.drops["no IKE_SA for these SPIs"] += 1
            return None
        connection = next(
            (
                c
                for c in self.connections.values()
                if c.accepts(self.address, remote[0])
            ),
            None,
        )
        if connection is None:
            self.drops["no connection for the peer"] += 1
            return None
        if not self._passes_cookie_check(data, remote, floated):
            return None
        port = self.nat_t_port if floated else self.ike_port
        local = (self.address, port)
        engine = IkeSa(
            connection.ike_sa_config(),
            is_initiator=False,
            local_spi=self._new_spi(),
            random_bytes=self._random_bytes,
            local_endpoint=_hashed_endpoint(connection, local),
            remote_endpoint=remote,
            spi_allocator=self._new_child_spi,
        )
        sa = ManagedIkeSa(
            engine, connection, local, remote, False, self.loop.time(), floated
        )
        try:
            self.manager.add(sa, header.spi_i)
        except HalfOpenLimitReached:
            self.drops["half-open limit"] += 1
            return None
        return sa

    def _passes_cookie_check(
        self, data: bytes, remote: Endpoint, floated: bool
    ) -> bool:
        """Under load, answer with N(COOKIE) and keep no state (§2.6)."""
        if self.manager.half_open < self.settings.cookie_threshold:
            return True
        try:
            challenge = self._cookies.screen(data, remote[0], self.loop.time())
        except IkeError:
            self.drops["malformed IKE_SA_INIT"] += 1
            return False
        if challenge is None:
            return True
        self.drops["COOKIE required"] += 1
        self._send_to(remote, floated, challenge)
        return False

    # -- after every engine step ---------------------------------------------

    def _after_step(
        self, sa: ManagedIkeSa, request: tuple[int, Endpoint, bool] | None
    ) -> None:
        """Send what the engine produced, act on its events, re-arm its timer.

        ``request`` is the message ID and source of the request just fed
        in, if it was one.
        """
        datagrams = sa.engine.datagrams_to_send()
        if request is not None and datagrams:
            self._follow_peer(sa, *request)
        self._maybe_float(sa)
        for datagram in datagrams:
            self._send(sa, datagram)
        if not self._handle_events(sa):
            return
        # Acting on events may have started an exchange (a Delete).
        for datagram in sa.engine.datagrams_to_send():
            self._send(sa, datagram)
        self._rearm(sa)

    def _maybe_float(self, sa: ManagedIkeSa) -> None:
        """The initiator moves to port 4500 once IKE_SA_INIT found a NAT."""
        engine = sa.engine
        if sa.floated or not sa.is_initiator:
            return
        if engine.state is not IkeSaState.IKE_AUTH_SENT:
            return
        if any(engine.nat_detected) or sa.connection.encap:
            sa.floated = True
            sa.local = (self.address, self.nat_t_port)
            sa.remote = (sa.remote[0], sa.connection.remote_nat_t_port)
            logger.debug("%s: NAT found, moving to port 4500", sa.label)

    def _follow_peer(
        self, sa: ManagedIkeSa, message_id: int, remote: Endpoint, floated: bool
    ) -> None:
        """The peer is where its latest accepted request came from.

        Only a new request the engine answered counts (RFC 7296 §2.11,
        §2.23): a replayed copy of an old one, from anywhere, moves nothing.
        """
        if message_id <= sa.peer_request_id:
            return
        sa.peer_request_id = message_id
        if (remote, floated) == (sa.remote, sa.floated):
            return
        sa.remote, sa.floated = remote, floated
        if floated:
            sa.local = (self.address, self.nat_t_port)
        for child in sa.children:
            # NAT rebinding: ESP follows IKE to the new address and port.
            self.dataplane.update_sa(
                child.outbound_spi, peer=remote[0], peer_port=remote[1]
            )

    def _send(self, sa: ManagedIkeSa, datagram: bytes) -> None:
        self._send_to(sa.remote, sa.floated, datagram, sa.label)

    def _send_to(
        self, remote: Endpoint, floated: bool, datagram: bytes, label: str = "-"
    ) -> None:
        address, port = remote
        try:
            if floated:
                self.dataplane.send_ike(
                    datagram, self.settings.host, (str(address), port)
                )
            elif self._socket is not None:
                self._socket.sendto(datagram, (str(address), port))
        except OSError as error:
            logger.debug("%s: send failed: %s", label, error)

    def _handle_events(self, sa: ManagedIkeSa) -> bool:
        """Act on the engine's events; False once the IKE_SA is gone."""
        while (event := sa.engine.next_event()) is not None:
            if isinstance(event, IkeSaEstablished):
                self._ike_sa_established(sa, event)
            elif isinstance(event, ChildSaEstablished):
                self._install_child(sa, event)
            elif isinstance(event, ChildSaFailed | ChildSaRekeyFailed):
                self._child_sa_refused(sa, event)
            elif isinstance(event, ChildSaOutboundSwitched):
                child = sa.child(int.from_bytes(event.inbound_spi, "big"))
                if child is not None:
                    self._activate_outbound(child, first=True)
            elif isinstance(event, ChildSaDeleted):
                self._child_sa_deleted(sa, event)
            elif isinstance(event, InitialContactReceived):
                self._initial_contact(sa, event)
            elif isinstance(event, IkeSaCreatedByRekey):
                self._adopt(sa, event)
            elif isinstance(event, _ChildSasMoved):
                self._move_children(sa, event)
            elif isinstance(event, IkeSaRekeyFailed):
                if sa.replaced_by is not None and sa.replaced_by.reauth_of is None:
                    self.loop.call_soon(self._delete_replaced, sa)
                engine = sa.engine
                self._emit(
                    IkeSaRekeyRefused(
                        sa.connection.name, engine.spi_i, engine.spi_r,
                        event.notify_type, event.reason,
                    )
                )  # fmt: skip
            elif isinstance(event, IkeSaFailed | IkeSaDeleted):
                self._ike_sa_gone(sa, event)
                return False
        return True

    def _rearm(self, sa: ManagedIkeSa) -> None:
        handle = self._timers.pop(sa, None)
        if handle is not None:
            handle.cancel()
        deadline = sa.engine.get_timer()
        if not sa.is_initiator and not sa.established:
            half_open_end = sa.created + self.settings.half_open_timeout
            deadline = (
                half_open_end if deadline is None else min(deadline, half_open_end)
            )
        if sa.reauth_at is not None:
            deadline = sa.reauth_at if deadline is None else min(deadline, sa.reauth_at)
        if deadline is not None:
            self._timers[sa] = self.loop.call_at(deadline, self._on_timer, sa)

    def _on_timer(self, sa: ManagedIkeSa) -> None:
        self._timers.pop(sa, None)
        now = self.loop.time()
        if not sa.is_initiator and not sa.established:
            if now - sa.created >= self.settings.half_open_timeout:
                self._remove(sa, None, "half-open IKE_SA timed out")
                return
        if sa.reauth_at is not None and now >= sa.reauth_at:
            if not self._reauthenticate(sa):
                # Not now (an exchange in the way): again a little later.
                sa.reauth_at = now + sa.connection.retransmit_timeout
        sa.engine.handle_timer(now)
        self._after_step(sa, None)

    # -- IKE_SA and CHILD_SA outcomes ----------------------------------------

    def _ike_sa_established(self, sa: ManagedIkeSa, event: IkeSaEstablished) -> None:
        self.manager.mark_established(sa)
        sa.remote_id = event.remote_id
        sa.reauth_at = self._reauth_deadline(sa.connection)
        keys = sa.engine.export_keys()
        if self._keylog is not None and keys is not None:
            self._keylog.log(event.spi_i, event.spi_r, *keys)
        if sa.floated and self._encap is not None and sa.engine.nat_detected[0]:
            # RFC 3948 §4: keep our NAT mapping open while we are behind it.
            peer = (str(sa.remote[0]), sa.remote[1])
            self._encap.start_keepalive(peer, sa.connection.keepalive_interval)
        logger.info(
            "%s: IKE_SA established with %s:%d%s",
            sa.label,
            *sa.remote,
            " (UDP-encapsulated)" if sa.floated else "",
        )
        self._emit(
            IkeSaUp(
                sa.connection.name, event.spi_i, event.spi_r, sa.is_initiator,
                event.encr, event.prf, event.integ, event.dh_group,
                sa.remote, sa.floated,
            )
        )  # fmt: skip

    def _install_child(self, sa: ManagedIkeSa, event: ChildSaEstablished) -> None:
        """Both SAs, inbound policies and, once active, outbound policies.

        A rekeyed pair's policies go first in the SPD so that they win over
        the old pair's until the old pair is deleted (RFC 7296 §2.8); the
        data plane links the new inbound SA to the old one, so packets still
        in flight on the old SA keep passing the inbound check.
        """
        definition = sa.connection.child
        rekeyed = (
            int.from_bytes(event.rekeyed_spi, "big") if event.rekeyed_spi else None
        )
        rekey = rekeyed is not None
        replaces = rekeyed if rekey else self._predecessor(sa)
        try:
            installation = child_sa_installation(
                event, definition, sa.local[0], sa.remote[0]
            )
            child = self._add_to_dataplane(sa, installation, replaces=replaces)
        except (ValueError, DataPlaneError) as error:
            logger.warning("%s: CHILD_SA not installed: %s", sa.label, error)
            self._emit(
                ChildSaRefused(sa.connection.name, definition.name, None, str(error))
            )
            if not rekey:
                self._new_child_failed(sa, None, str(error))
            # The peer has its half installed: delete the pair (§1.4.1).
            try:
                sa.engine.delete_child_sa(event.inbound_spi, self.loop.time())
            except RuntimeError as state:
                logger.debug("%s: cannot delete the CHILD_SA: %s", sa.label, state)
            return
        if event.outbound_active:
            # Our reauthentication sends on the new pair at once; the peer's
            # keeps sending on the old pair until that one is deleted.
            self._activate_outbound(child, first=rekey or sa.reauth_of is not None)
        if not rekey:
            sa.child_pending = False
        sa.children.append(child)
        inbound = installation.inbound
        logger.info(
            "%s: CHILD_SA %s installed, SPIs in 0x%08x out 0x%08x, %s/%s%s",
            sa.label, definition.name, child.inbound_spi, child.outbound_spi,
            inbound.encryption.name, inbound.integrity.name,
            " (rekeyed)" if rekey else "",
        )  # fmt: skip
        self._emit(
            ChildSaInstalled(
                sa.connection.name, definition.name, child.inbound_spi,
                child.outbound_spi, inbound.encryption, inbound.integrity,
                inbound.esn, inbound.mode, sa.floated, child.local_selectors,
                child.remote_selectors, rekeyed,
            )
        )  # fmt: skip
        if sa.reauth_of is not None:
            self._finish_reauth(sa)

    def _predecessor(self, sa: ManagedIkeSa) -> int | None:
        """The inbound SPI of the CHILD_SA a new one on ``sa`` replaces.

        That is the connection's CHILD_SA on another IKE_SA with the same
        peer: the IKE_SA being reauthenticated, by us or by the peer. The
        new inbound SA joins its lineage so that the data plane admits both
        until the old IKE_SA goes (make-before-break). The same peer means
        the same identity from the same address: peers that share one
        identity (one PSK for many initiators) stay apart.
        """
        if sa.reauth_of is not None:
            others = [sa.reauth_of]
        else:
            others = [
                other
                for other in self.manager
                if other is not sa
                and other.connection.name == sa.connection.name
                and other.remote_id == sa.remote_id
                and other.remote[0] == sa.remote[0]
            ]
        name = sa.connection.child.name
        for other in others:
            for child in other.children:
                if child.name == name:
                    return child.inbound_spi
        return None

    def _add_to_dataplane(
        self,
        sa: ManagedIkeSa,
        installation: ChildSaInstallation,
        *,
        replaces: int | None,
    ) -> InstalledChild:
        """add_sa both ways and the inbound policies; all or nothing."""
        dataplane = self.dataplane
        inbound, outbound = installation.inbound, installation.outbound
        transport = Transport.UDP if sa.floated else Transport.RAW
        if transport is Transport.RAW:
            dataplane.open_raw(Protocol.ESP, self.settings.host)
        local_address, (peer, peer_port) = sa.local[0], sa.remote
        dataplane.add_sa(
            inbound, inbound=True, transport=transport, local=local_address,
            replaces=replaces,
        )  # fmt: skip
        try:
            dataplane.add_sa(
                outbound, inbound=False, transport=transport,
                peer=peer, peer_port=peer_port, local=local_address,
            )  # fmt: skip
        except DataPlaneError:
            dataplane.del_sa(inbound.spi, inbound=True)
            raise
        child = InstalledChild(
            sa.connection.child.name,
            inbound.spi,
            outbound.spi,
            installation.local_selectors,
            installation.remote_selectors,
        )
        for local_ts, remote_ts in _pairs(child):
            child.policies.append(
                dataplane.add_policy(
                    local_ts, remote_ts, inbound.spi,
                    direction=Direction.INBOUND,
                    index=None if replaces is None else 0,
                )
            )  # fmt: skip
        return child

    def _activate_outbound(self, child: InstalledChild, *, first: bool) -> None:
        """Point outbound policies at this pair (RFC 4301 §4.4.1)."""
        if child.outbound_active:
            return
        for local_ts, remote_ts in _pairs(child):
            child.policies.append(
                self.dataplane.add_policy(
                    local_ts, remote_ts, child.outbound_spi, index=0 if first else None
                )
            )
        child.outbound_active = True

    def _child_sa_refused(
        self, sa: ManagedIkeSa, event: ChildSaFailed | ChildSaRekeyFailed
    ) -> None:
        rekey = isinstance(event, ChildSaRekeyFailed)
        prefix = "rekey: " if rekey else ""
        name = sa.connection.child.name
        self._emit(
            ChildSaRefused(
                sa.connection.name, name, event.notify_type, prefix + event.reason
            )
        )
        if not rekey:
            self._new_child_failed(sa, event.notify_type, event.reason)

    def _new_child_failed(
        self, sa: ManagedIkeSa, notify_type: NotifyType | int | None, reason: str
    ) -> None:
        """A new CHILD_SA did not come up: hold the trap; a reauthentication
        is abandoned and its IKE_SA deleted, the old one kept."""
        sa.child_pending = False
        self._hold_trap(sa.connection.name)
        if sa.reauth_of is None:
            return
        self._reauth_failed(sa, notify_type, f"CHILD_SA refused: {reason}")
        try:
            sa.engine.delete(self.loop.time())
        except RuntimeError as state:
            logger.debug("%s: cannot delete the IKE_SA: %s", sa.label, state)

    def _child_sa_deleted(self, sa: ManagedIkeSa, event: ChildSaDeleted) -> None:
        child = sa.child(int.from_bytes(event.inbound_spi, "big"))
        if child is None:
            return  # never installed (refused by the data plane)
        sa.children.remove(child)
        reason = event.reason.value
        if (
            sa.replaced_by is not None
            and event.reason is ChildSaDeleteReason.IKE_SA_GONE
        ):
            reason = "reauthenticated"
        self._remove_child(sa, child, reason)
        if event.reason is ChildSaDeleteReason.DELETED_BY_PEER:
            self._peer_closed(sa, ike_sa_deleted=False)

    def _peer_closed(self, sa: ManagedIkeSa, *, ike_sa_deleted: bool) -> None:
        """Apply close_action after the peer deleted ``sa`` or its CHILD_SA.

        Nothing happens while another CHILD_SA or IKE_SA of the connection
        lives on (the peer deleting what a reauthentication replaced).
        """
        name = sa.connection.name
        connection = self.connections.get(name)
        if connection is None or connection.close_action is CloseAction.NONE:
            return
        others = [o for o in self.manager if o is not sa and o.connection.name == name]
        if others or sa.children:
            return
        action = connection.close_action
        if action is CloseAction.TRAP:
            self.install_trap(name)
        elif ike_sa_deleted:
            self.initiate(name)
        elif not self._request_child(sa):
            return
        logger.info("%s: closed by the peer, close_action %s", sa.label, action.value)
        self._emit(
            CloseActionTaken(
                name, action, sa.engine.spi_i, sa.engine.spi_r, ike_sa_deleted
            )
        )

    def _initial_contact(self, sa: ManagedIkeSa, event: InitialContactReceived) -> None:
        # RFC 7296 §2.4: the peer kept no state, so its older IKE_SAs are
        # gone on its side; remove ours without sending Deletes.
        for other in self.manager:
            same_peer = other.connection.name == sa.connection.name and (
                other.remote_id == event.remote_id
            )
            if other is not sa and same_peer:
                self._remove(other, None, "replaced after INITIAL_CONTACT")

    def _adopt(self, sa: ManagedIkeSa, event: IkeSaCreatedByRekey) -> None:
        """Register the IKE_SA a rekey made (RFC 7296 §2.18): same peer,
        same sockets, established from the start."""
        engine = event.ike_sa
        new = ManagedIkeSa(
            engine, sa.connection, sa.local, sa.remote,
            engine.is_original_initiator, self.loop.time(), sa.floated,
            established=True, remote_id=sa.remote_id,
        )  # fmt: skip
        new.reauth_at = sa.reauth_at  # reauthentication survives a rekey
        self.manager.add(new)
        logger.info("%s: rekeyed into %s", sa.label, new.label)
        self._after_step(new, None)

    def _move_children(self, sa: ManagedIkeSa, event: _ChildSasMoved) -> None:
        """The CHILD_SAs stay installed; only their IKE_SA changes."""
        new = next(
            (
                other
                for other in self.manager
                if (other.engine.spi_i, other.engine.spi_r)
                == (event.new_spi_i, event.new_spi_r)
            ),
            None,
        )
        if new is not None:
            new.children.extend(sa.children)
            sa.children.clear()
            self._hand_over_reauth(sa, new)
        self._emit(
            IkeSaRekeyed(
                sa.connection.name, event.spi_i, event.spi_r,
                event.new_spi_i, event.new_spi_r,
            )
        )  # fmt: skip

    def _hand_over_reauth(self, old: ManagedIkeSa, new: ManagedIkeSa) -> None:
        """An IKE_SA rekey moved a reauthentication's old end to ``new``."""
        replacement = old.replaced_by
        if replacement is None:
            return
        new.replaced_by = replacement
        if replacement.reauth_of is old:
            replacement.reauth_of = new
        else:
            # Reauthenticated already; the deletion waited for this rekey.
            self.loop.call_soon(self._delete_replaced, new)

    def _ike_sa_gone(self, sa: ManagedIkeSa, event: IkeSaFailed | IkeSaDeleted) -> None:
        if isinstance(event, IkeSaFailed):
            logger.info("%s: IKE_SA failed: %s", sa.label, event.reason)
            self._remove(sa, event.notify_type, event.reason)
            self._hold_trap(sa.connection.name)
            return
        reason = event.reason.value
        if sa.replaced_by is not None and sa.replaced_by.reauth_of is None:
            reason = "reauthenticated"
        logger.info("%s: IKE_SA %s", sa.label, reason)
        self._remove(sa, None, reason)
        if event.reason is IkeSaDeleteReason.PEER_DEAD:
            self._emit(PeerDead(sa.connection.name, event.spi_i, event.spi_r))
        connection = self.connections.get(sa.connection.name)
        if event.restart and connection is not None and connection.remote_address:
            self.initiate(connection.name)
        elif event.reason is IkeSaDeleteReason.DELETED_BY_PEER:
            self._peer_closed(sa, ike_sa_deleted=True)

    def _remove(
        self, sa: ManagedIkeSa, notify_type: NotifyType | int | None, reason: str
    ) -> None:
        """Take the IKE_SA and its CHILD_SAs out of the manager and data plane."""
        handle = self._timers.pop(sa, None)
        if handle is not None:
            handle.cancel()
        self.manager.remove(sa)
        if sa.reauth_of is not None:
            self._reauth_failed(sa, notify_type, reason)
        replacement = sa.replaced_by
        if replacement is not None and replacement.reauth_of is sa:
            replacement.reauth_of = None  # gone first: the new one just lives on
        shared = any(o.floated and o.remote == sa.remote for o in self.manager)
        if self._encap is not None and sa.floated and not shared:
            self._encap.stop_keepalive((str(sa.remote[0]), sa.remote[1]))
        for child in sa.children:
            self._remove_child(sa, child, reason)
        sa.children.clear()
        engine = sa.engine
        self._emit(
            IkeSaDown(
                sa.connection.name, engine.spi_i, engine.spi_r, notify_type, reason
            )
        )

    def _remove_child(
        self, sa: ManagedIkeSa, child: InstalledChild, reason: str
    ) -> None:
        dataplane = self.dataplane
        for policy in child.policies:
            dataplane.del_policy(policy)
        for spi, inbound in ((child.inbound_spi, True), (child.outbound_spi, False)):
            try:
                dataplane.del_sa(spi, inbound=inbound)
            except DataPlaneError:
                logger.debug("%s: SA 0x%08x already gone", sa.label, spi)
        self._emit(
            ChildSaRemoved(
                sa.connection.name, child.name, child.inbound_spi,
                child.outbound_spi, reason,
            )
        )  # fmt: skip

    # -- helpers ---------------------------------------------------------------

    def _new_spi(self) -> bytes:
        # RFC 7296 §2.6: our SPI alone must find the IKE_SA; never zero.
        for _ in range(16):
            spi = self._random_bytes(8)
            if spi != _SPI_ZERO and not self.manager.is_taken(spi):
                return spi
        raise RuntimeError("no free IKE SPI: the random source is broken")

    def _new_child_spi(self) -> bytes:
        # The data plane reserves it, so no two inbound SAs can share it.
        return self.dataplane.get_spi().to_bytes(4, "big")

    def _emit(self, event: DaemonEvent) -> None:
        for subscriber in self._subscribers:
            subscriber(event)


def _pairs(
    child: InstalledChild,
) -> list[tuple[PolicySelector, PolicySelector]]:
    return [(lo, re) for lo in child.local_selectors for re in child.remote_selectors]


def _hashed_endpoint(connection: ConnectionDefinition, local: Endpoint) -> Endpoint:
    """The endpoint NAT detection hashes as our source.

    With ``encap`` we hash port 0, which no datagram carries: the peer then
    sees us behind a NAT and both sides float to 4500 and encapsulate ESP,
    the trick strongSwan's ``encap = yes`` plays (RFC 7296 §2.23 leaves the
    hashes to the sender).
    """
    return (local[0], 0) if connection.encap else local
