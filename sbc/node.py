"""One SBC node: the running engines built from a `Config`, changed live.

`Node` owns the SIP endpoint and its listeners, the B2BUA call engine, the
media relay, the trunk services (registration, keepalive) and, when trunks
name an IPsec profile, the secure-trunk runtime. The admin plane's
reconciler hands it a whole configuration with `apply`; the node works out
what differs from what runs and changes only that:

- listeners: new sockets are opened first; only when every one is open are
  the engines switched over and the sockets no longer wanted closed. A
  listener whose socket did not change keeps it (and its connections);
- trunks, dial plans, limits and media policy: swapped in the call engine
  for new calls; calls in progress keep their dialogs and their trunks'
  rules, even when their trunk was removed;
- registration and keepalive: restarted only for trunks that changed.

A configuration is applied whole or not at all: when a socket cannot be
opened (or the media section asks for what only a restart can do), the
sockets opened for it are closed again and the engines keep running as
before; the outcome names the object that failed and why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from sbc.b2bua import B2bua, B2buaSettings, CallRecordWriter, LocalEndpoint
from sbc.b2bua.call import Call, Side
from sbc.b2bua.keepalive import (
    KeepaliveEvent,
    TargetCameUp,
    TargetWentDown,
    TrunkCameUp,
    TrunkWentDown,
)
from sbc.b2bua.media import LegHome, MediaAnchor
from sbc.b2bua.registration import Registered, RegistrationFailed, Unregistered
from sbc.cdr import CallRecord
from sbc.config.model import Config, Listener, Trunk
from sbc.io.calls import listener_endpoints, local_endpoints
from sbc.io.endpoint import SipEndpoint
from sbc.io.ipsec_channel import ipsec_peers
from sbc.io.media_glue import (
    ArrivalMemo,
    LegSetup,
    MediaCdr,
    MediaFirstUser,
    leg_homes,
    leg_setup,
    media_relay,
    trunk_policy,
)
from sbc.io.settings import ListenSpec, TransportSettings
from sbc.io.tls import server_context
from sbc.io.trunk_state import (
    UNREGISTER_WAIT,
    TrunkEvent,
    TrunkServices,
    stop_trunk_services,
)
from sbc.media import MediaRelay
from sbc.node_views import (
    CallEnded,
    CallStarted,
    CallView,
    ConfigurationApplied,
    EventBus,
    Subscription,
    TrunkMode,
    TrunkStateChanged,
    TrunkView,
)
from sbc.secure.derive import with_mesh
from sbc.secure.records import IpsecCallRecords
from sbc.sip.core import CorePolicy
from sbc.sip.events import RequestReceived

if TYPE_CHECKING:
    from ipsec.dataplane import DataPlane

_log = logging.getLogger("sbc.node")

ObjectKey = tuple[str, str]
"""(kind, name) of a configuration object: ``("trunk", "carrier")``."""

_TARGET_EVENTS = (TargetWentDown, TargetCameUp)
_KEEPALIVE_EVENTS = (*_TARGET_EVENTS, TrunkWentDown, TrunkCameUp)

MEDIA_KEY: ObjectKey = ("media", "media")
"""The media section, one object of its own in outcomes."""

_SECTIONS = (
    ("listener", "listeners"),
    ("trunk", "trunks"),
    ("dial_plan", "dial_plans"),
    ("ipsec_profile", "ipsec_profiles"),
    ("mesh_peer", "mesh_peers"),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one object in an apply."""

    applied: bool
    reason: str = ""


class ApplyRefused(Exception):
    """One object of a configuration cannot run; nothing was changed."""

    def __init__(self, key: ObjectKey, reason: str) -> None:
        super().__init__(f"{key[0]} {key[1]!r}: {reason}")
        self.key = key
        self.reason = reason


class NodeUnavailable(RuntimeError):
    """The action needs a part of the node that does not run (no call
    engine yet, no secure runtime)."""


class SecureRuntime(Protocol):
    """The secure-trunk runtime (IPsec data plane and IKE daemon), as the
    node drives it; built by the factory given to `Node` when the
    configuration names IPsec profiles (`sbc.secure.node_runtime`)."""

    @property
    def data_plane(self) -> DataPlane: ...

    @property
    def unprotected(self) -> set[str]: ...

    def keepalive_event(self, event: KeepaliveEvent) -> None: ...

    def call_identifiers(self, trunk: str) -> dict[str, Any] | None: ...

    async def start(self, config: Config) -> None: ...

    async def apply(self, config: Config) -> None: ...

    async def stop(self) -> None: ...

    def security_associations(self) -> list[dict[str, Any]]: ...

    def trunk_protection(self) -> dict[str, str]: ...

    async def tunnel_action(self, name: str, action: str) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...


SecureRuntimeFactory = Callable[[Callable[[object], None]], SecureRuntime]
"""Builds the runtime; its argument publishes the runtime's typed events
(SA up/down ...) on the node's bus."""


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """What the node takes from the command line rather than the database."""

    transport: TransportSettings = dataclasses.field(
        default_factory=lambda: TransportSettings(listen=())
    )
    """Timeouts and limits of the SIP transports; its ``listen`` are static
    listeners (``--listen``), open for the process' life and nameless."""
    no_route_delay: float = 0.0
    """Before a call engine exists: hold an INVITE this long before 480."""
    no_answer_timeout: float | None = None
    """Timer C of the call engine (None: the engine's default)."""


_SocketKey = tuple[str, str, int, bool, Path | None, Path | None, str]


def _socket_key(listener: Listener) -> _SocketKey:
    # Any change here means another socket; other fields (media address,
    # SRTP) change only what the engines do with its calls. Each listener
    # asking for port 0 gets a socket of its own.
    return (
        listener.transport.upper(),
        str(listener.address),
        listener.port,
        listener.ipsec,
        listener.tls_cert,
        listener.tls_key,
        listener.name if listener.port == 0 else "",
    )


@dataclass(slots=True)
class _TrunkStatus:
    mode: TrunkMode = TrunkMode.ENABLED
    registration: str = "none"
    reachable: bool | None = None
    reason: str = ""
    published: tuple[str, str] = ("", "")


@dataclass(slots=True)
class _Plan:
    """A configuration ready to switch to: its sockets are open already."""

    config: Config
    bound: dict[str, ListenSpec]
    opened: dict[_SocketKey, ListenSpec]
    closing: dict[_SocketKey, ListenSpec]


class Node:
    """The engines of one node; see the module docstring."""

    def __init__(
        self,
        settings: NodeSettings,
        cdr: CallRecordWriter,
        *,
        secure_runtime: SecureRuntimeFactory | None = None,
        close_cdr: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.events = EventBus()
        self.endpoint = SipEndpoint(
            settings.transport, CorePolicy(no_route_delay=settings.no_route_delay)
        )
        self.config = Config()
        """The configuration running now (the last one applied whole)."""
        self.engine: B2bua | None = None
        self.relay: MediaRelay | None = None
        self.secure: SecureRuntime | None = None
        self._cdr = cdr
        self._close_cdr = close_cdr
        self._secure_factory = secure_runtime
        self._sockets: dict[_SocketKey, ListenSpec] = {}
        self._bound: dict[str, ListenSpec] = {}
        self._names: dict[ListenSpec, str] = {}
        self._services: dict[str, TrunkServices] = {}
        self._status: dict[str, _TrunkStatus] = {}
        self._endpoints: tuple[LocalEndpoint, ...] = ()
        self._listener_endpoints: tuple[LocalEndpoint, ...] = ()
        self._leg_setup: Callable[[str | None], LegSetup] | None = None
        self._leg_homes: LegHome | None = None
        self._trunk_policy = trunk_policy(self.config)
        self._tasks: set[asyncio.Task[None]] = set()
        self._restarting: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        self._clock_offset = 0.0
        self.counters = {"applies": 0, "apply_failures": 0}
        self._media_totals: dict[str, int] = {}

    # Life cycle

    async def start(self, config: Config | None = None) -> dict[ObjectKey, Outcome]:
        """Open the static listeners (OSError when one cannot be), then
        apply ``config``."""
        self._clock_offset = time.time() - asyncio.get_running_loop().time()
        await self.endpoint.start()
        return await self.apply(config or Config())

    async def apply(self, config: Config) -> dict[ObjectKey, Outcome]:
        """Make the engines run ``config``; an outcome for each of its objects."""
        async with self._lock:
            return await self._apply(config)

    async def stop(self) -> None:
        """Remove registrations (bounded wait), close every socket, stop the
        secure runtime, flush the call records and end the event streams."""
        async with self._lock:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.gather(
                *(
                    stop_trunk_services(self.endpoint, services)
                    for services in self._services.values()
                )
            )
            await self.endpoint.close()
            user = self.endpoint.user
            if isinstance(user, MediaFirstUser):
                await user.close()
                _log.info("media relay closed")
            if self.secure is not None:
                await self.secure.stop()
            if self._close_cdr is not None:
                # Waits for queued records; their fsync must not block the loop.
                await asyncio.get_running_loop().run_in_executor(None, self._close_cdr)
            self.events.close()

    # Applying a configuration

    async def _apply(self, config: Config) -> dict[ObjectKey, Outcome]:
        changed = set(_changed_keys(self.config, config))
        if config == self.config and self.counters["applies"]:
            # The reconciler's polls: what runs is what is asked for.
            return {key: Outcome(True) for key in _keys(config)}
        try:
            plan = await self._prepare(config)
        except ApplyRefused as refused:
            self.counters["apply_failures"] += 1
            _log.warning("configuration not applied: %s", refused)
            outcomes = _refused(config, changed, refused)
            self.events.publish(ConfigurationApplied(0, len(changed)))
            return outcomes
        old = self.config
        self._switch(plan)
        await self._close_sockets(plan.closing)
        self._restart_trunk_services(old, config)
        self.counters["applies"] += 1
        if changed:
            _log.info("configuration applied: %d objects changed", len(changed))
        outcomes = {key: Outcome(True) for key in _keys(config)}
        self.events.publish(ConfigurationApplied(len(outcomes), 0))
        return outcomes

    async def _prepare(self, config: Config) -> _Plan:
        """Check what only a running node can check and open new sockets;
        on refusal close what was opened, leaving everything as it was."""
        self._check_media(config)
        opened: dict[_SocketKey, ListenSpec] = {}
        started = self.secure is None and _secure_object(config) is not None
        try:
            if started:
                # IPsec listeners are bindings in its data plane: it comes first.
                await self._apply_secure(config)
            bound = await self._open_sockets(config, opened)
            if self.secure is not None and not started:
                await self._apply_secure(config)
        except ApplyRefused:
            await self._close_sockets(opened)
            if started:
                await self._drop_secure()
            raise
        wanted = {_socket_key(item) for item in config.listeners}
        closing = {k: v for k, v in self._sockets.items() if k not in wanted}
        return _Plan(config, bound, opened, closing)

    def _check_media(self, config: Config) -> None:
        if self.engine is None:
            return
        old, new = self.config.media, config.media
        if (old.address is None) != (new.address is None):
            raise ApplyRefused(
                MEDIA_KEY, "media anchoring is switched on or off only at a restart"
            )
        if (old.port_min, old.port_max) != (new.port_min, new.port_max):
            raise ApplyRefused(
                MEDIA_KEY, "the media port range changes only at a restart"
            )

    async def _open_sockets(
        self, config: Config, opened: dict[_SocketKey, ListenSpec]
    ) -> dict[str, ListenSpec]:
        """Each listener's bound socket: kept when unchanged, else opened."""
        bound: dict[str, ListenSpec] = {}
        for listener in config.listeners:
            key = _socket_key(listener)
            spec = self._sockets.get(key) or opened.get(key)
            if spec is None:
                spec = await self._open(listener)
                opened[key] = spec
            bound[listener.name] = spec
        return bound

    async def _open(self, listener: Listener) -> ListenSpec:
        key = ("listener", listener.name)
        tls = None
        if listener.tls_cert is not None and listener.tls_key is not None:
            try:
                tls = server_context(listener.tls_cert, listener.tls_key)
            except (OSError, ssl.SSLError) as exc:
                reason = f"TLS certificate or key unusable: {exc}"
                raise ApplyRefused(key, reason) from None
        spec = ListenSpec(
            listener.transport.upper(),
            str(listener.address),
            listener.port,
            listener.ipsec,
        )
        try:
            return await self.endpoint.open_listener(spec, tls)
        except (OSError, ValueError) as exc:  # ChannelUnavailable is an OSError
            raise ApplyRefused(key, f"cannot listen on {spec}: {exc}") from None

    async def _close_sockets(self, sockets: dict[_SocketKey, ListenSpec]) -> None:
        for spec in sockets.values():
            await self.endpoint.close_listener(spec)

    async def _apply_secure(self, config: Config) -> None:
        if self._secure_factory is None:
            key = _secure_object(config) or MEDIA_KEY
            raise ApplyRefused(key, "this node runs without the IPsec runtime")
        try:
            if self.secure is None:
                secure = self._secure_factory(self.events.publish)
                await secure.start(config)
                self.secure = secure
                self.endpoint.data_plane = secure.data_plane
                if self.relay is not None:
                    self.relay.data_plane = secure.data_plane
            else:
                await self.secure.apply(config)
        except (OSError, ValueError) as exc:
            refused = _runtime_refused(config, self.config)
            raise ApplyRefused(refused, str(exc)) from None

    async def _drop_secure(self) -> None:
        """Undo a first start of the secure runtime whose apply failed."""
        if self.secure is not None:
            await self.secure.stop()
        self.secure = None
        self.endpoint.data_plane = None
        if self.relay is not None:
            self.relay.data_plane = None

    def _switch(self, plan: _Plan) -> None:
        """Swap the engines over to ``plan`` (nothing here can fail)."""
        config = plan.config
        self._sockets = {
            k: v
            for k, v in {**self._sockets, **plan.opened}.items()
            if k not in plan.closing
        }
        self._bound = plan.bound
        self._names = {spec: name for name, spec in plan.bound.items()}
        listening = [plan.bound[item.name] for item in config.listeners]
        self._endpoints = local_endpoints(config, listening)
        self._listener_endpoints = listener_endpoints(config, listening)
        # Mesh peers run in the engines as the trunks derived from them.
        engines = with_mesh(config)
        self._trunk_policy = trunk_policy(engines)
        # Protected trunks' targets and B-legs only ever inside their SAs.
        self.endpoint.set_ipsec_peers(ipsec_peers(engines))
        if config.media.address is not None:
            address = str(config.media.address)
            self._leg_setup = leg_setup(config, address)
            self._leg_homes = leg_homes(engines, address, self.endpoint.data_plane)
        self._status = {
            trunk.name: self._status.get(trunk.name, _TrunkStatus())
            for trunk in engines.trunks
        }
        settings = self._engine_settings(engines)
        if self.engine is not None:
            self.engine.reconfigure(engines, settings)
            self._retune_relay(config)
        elif engines.trunks:
            self.engine = self._attach_engine(engines, settings)
        self.config = config
        if self.engine is not None and self.secure is not None:
            self.engine.unprotected_trunks = self.secure.unprotected
        if self.engine is not None:
            self.engine.blocked_trunks.update(
                name
                for name, status in self._status.items()
                if status.mode is not TrunkMode.ENABLED
            )

    def _engine_settings(self, config: Config) -> B2buaSettings:
        settings = dataclasses.replace(
            B2buaSettings.from_config(config),
            endpoints=self._endpoints,
            listener_endpoints=self._listener_endpoints,
        )
        timeout = self.settings.no_answer_timeout
        if timeout is not None:
            settings = dataclasses.replace(settings, no_answer_timeout=timeout)
        return settings

    def _retune_relay(self, config: Config) -> None:
        if self.relay is None:
            return
        media = config.media
        self.relay.settings = dataclasses.replace(
            self.relay.settings,
            media_timeout=media.timeout,
            latch_any_source=media.latch_any_source,
        )

    # The call engine

    def _attach_engine(self, config: Config, settings: B2buaSettings) -> B2bua:
        """The B2BUA as the endpoint's transaction user (no await before use)."""
        records = _RecordTap(
            IpsecCallRecords(self._cdr, self._call_identifiers), self._call_ended
        )
        rng = random.SystemRandom()  # tags and Call-IDs unguessable (§19.3)
        if config.media.address is None:
            engine = B2bua(
                self.endpoint.transactions, config, settings, rng, records,
                arrival=self._arrival, route_chosen=self._route_chosen,
            )  # fmt: skip
            self.endpoint.user = engine
            return engine
        anchor = MediaAnchor(
            os.urandom, trunk_policy=self._policy_for_trunk, leg_home=self._leg_home
        )
        self.relay = media_relay(
            config.media, anchor, self.endpoint.wake, self.endpoint.data_plane
        )
        arrival = ArrivalMemo(self._arrival)

        def route_chosen(call_id: str, side: Side, trunk: str) -> None:
            anchor.route_chosen(call_id, side, trunk)
            self._route_chosen(call_id, side, trunk)

        engine = B2bua(
            self.endpoint.transactions, config, settings, rng,
            MediaCdr(records, anchor), arrival=arrival, bodies=anchor,
            route_chosen=route_chosen,
        )  # fmt: skip
        anchor.end_calls_with(engine.end_call)
        self.endpoint.user = MediaFirstUser(
            engine, self.endpoint.transactions, anchor, self.relay,
            self._legs_for, arrival, wake=self.endpoint.wake,
        )  # fmt: skip
        return engine

    def _call_identifiers(self, trunk: str) -> dict[str, Any] | None:
        return None if self.secure is None else self.secure.call_identifiers(trunk)

    def _arrival(self, event: RequestReceived) -> str | None:
        arrival = self.endpoint.arrival
        if arrival is None or arrival.transport != event.transport:
            return None
        return self._names.get(arrival)

    def _legs_for(self, listener: str | None) -> LegSetup:
        assert self._leg_setup is not None  # set whenever media is anchored
        return self._leg_setup(listener)

    def _policy_for_trunk(self, trunk: str, base: Any) -> Any:
        return self._trunk_policy(trunk, base)

    def _leg_home(self, trunk: str) -> tuple[str, DataPlane | None]:
        assert self._leg_homes is not None  # set whenever media is anchored
        return self._leg_homes(trunk)

    def _route_chosen(self, call_id: str, side: Side, trunk: str) -> None:
        if side is Side.A:
            self.events.publish(CallStarted(call_id, trunk))

    def _call_ended(self, record: CallRecord) -> None:
        self.events.publish(
            CallEnded(
                record.call_id, record.a_trunk, record.b_trunk, record.final_status,
                record.disposition.value, record.end_reason,
            )
        )  # fmt: skip
        _add_counters(self._media_totals, record.media)
        for trunk in (record.a_trunk, record.b_trunk):
            if trunk is not None:
                self._drained(trunk)

    # Trunk services

    def _restart_trunk_services(self, old: Config, new: Config) -> None:
        """Restart registration and keepalive of the trunks that changed."""
        if self.engine is None:
            return
        before = {trunk.name: trunk for trunk in old.trunks}
        moved = old.listeners != new.listeners
        for trunk in new.trunks:
            if before.pop(trunk.name, None) != trunk or moved:
                self._restart_services(trunk.name, trunk)
        for name in before:
            self._restart_services(name, None)

    def _restart_services(self, name: str, trunk: Trunk | None) -> None:
        # One restart per trunk at a time: a later one waits for the earlier.
        earlier = self._restarting.get(name)
        task = asyncio.get_running_loop().create_task(
            self._replace_services(name, trunk, earlier)
        )
        self._restarting[name] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace_services(
        self, name: str, trunk: Trunk | None, earlier: asyncio.Task[None] | None
    ) -> None:
        if earlier is not None:
            await asyncio.gather(earlier, return_exceptions=True)
        engine = self.engine
        assert engine is not None  # services run only beside an engine
        old = self._services.pop(name, None)
        if old is not None:
            await stop_trunk_services(self.endpoint, old, UNREGISTER_WAIT)
            old.detach_from(engine)
        if trunk is None or not (trunk.registration or trunk.keepalive):
            return
        only = self.config.model_copy(update={"trunks": [trunk]})
        services = TrunkServices(
            self.endpoint.transactions, engine, only, self._endpoints,
            random.SystemRandom(),
        )  # fmt: skip
        services.subscribe(self._trunk_event)
        self._services[name] = services
        status = self._status.get(name)
        if status is not None and trunk.registration is not None:
            status.registration = "pending"
        services.start(asyncio.get_running_loop().time())
        self.endpoint.wake()

    def _trunk_event(self, event: TrunkEvent) -> None:
        if self.secure is not None and isinstance(event, _KEEPALIVE_EVENTS):
            self.secure.keepalive_event(event)
        name = event.target.trunk if isinstance(event, _TARGET_EVENTS) else event.trunk
        status = self._status.get(name)
        if status is None:
            return
        if isinstance(event, Registered):
            status.registration, status.reason = "registered", ""
        elif isinstance(event, RegistrationFailed):
            status.registration = "failed"
            status.reason = f"registration failed ({event.status or 'no answer'})"
        elif isinstance(event, Unregistered):
            status.registration = "none"
        elif isinstance(event, TrunkWentDown):
            status.reachable = False
            status.reason = "no answer to OPTIONS from any target"
        elif isinstance(event, TrunkCameUp):
            status.reachable, status.reason = True, ""
        self._publish_trunk(name)

    # Views

    def calls(self) -> list[CallView]:
        """The calls in progress, oldest first."""
        if self.engine is None:
            return []
        calls = sorted(self.engine.calls(), key=lambda call: call.start_time)
        return [self._call_view(call) for call in calls]

    def _call_view(self, call: Call) -> CallView:
        offset = self._clock_offset
        session = (
            None if self.relay is None else self.relay.sessions.get(call.a.call_id)
        )
        return CallView(
            call_id=call.a.call_id,
            a_trunk=call.a.trunk,
            b_trunk=None if call.b is None else call.b.trunk,
            calling=call.calling_e164,
            called=call.called_e164,
            state=call.phase.value,
            start_time=call.start_time + offset,
            answer_time=None if call.answer_time is None else call.answer_time + offset,
            media={} if session is None else session.snapshot(),
        )

    def trunks(self) -> list[TrunkView]:
        return [self._trunk_view(trunk) for trunk in self.config.trunks]

    def trunk(self, name: str) -> TrunkView:
        """The trunk's view; LookupError when no such trunk runs."""
        trunk = self.config.trunk(name)
        if trunk is None:
            raise LookupError(f"no trunk {name!r}")
        return self._trunk_view(trunk)

    def _trunk_view(self, trunk: Trunk) -> TrunkView:
        status = self._status.get(trunk.name, _TrunkStatus())
        protection = None
        if self.secure is not None and trunk.ipsec_profile is not None:
            protection = self.secure.trunk_protection().get(trunk.name)
        state, reason = _trunk_state(status, self._trunk_calls(trunk.name))
        return TrunkView(
            name=trunk.name,
            kind=trunk.kind,
            state=state,
            reason=reason,
            mode=status.mode,
            registration=status.registration,
            reachable=status.reachable,
            active_calls=self._trunk_calls(trunk.name),
            protection=protection,
        )

    def _trunk_calls(self, name: str) -> int:
        if self.engine is None:
            return 0
        return sum(
            1
            for call in self.engine.calls()
            if call.a.trunk == name or (call.b is not None and call.b.trunk == name)
        )

    def security_associations(self) -> list[dict[str, Any]]:
        return [] if self.secure is None else self.secure.security_associations()

    def snapshot(self) -> dict[str, Any]:
        """Every engine's counters, in the sections `web.metrics` reads:
        ``sip`` (the endpoint's groups), ``calls`` (active, per-trunk
        admission), ``trunks`` (state per trunk), ``trunk_services``
        (registration and keepalive events), ``media`` (sessions, totals
        since start), ``node`` (applies, events) and, with IPsec, the secure
        runtime's sections (``ike``, ``ipsec``)."""
        snapshot: dict[str, Any] = {
            "sip": self.endpoint.snapshot(),
            "calls": self._calls_section(),
            "trunks": {
                view.name: {
                    "state": view.state,
                    "mode": view.mode.value,
                    "registration": view.registration,
                    "active_calls": view.active_calls,
                }
                for view in self.trunks()
            },
            "trunk_services": self._service_counters(),
            "node": {
                **self.counters,
                "events_published": self.events.published,
                "events_lost": self.events.lost,
            },
        }
        if self.relay is not None:
            snapshot["media"] = self._media_section(self.relay)
        if self.secure is not None:
            snapshot.update(self.secure.snapshot())
        return snapshot

    def _calls_section(self) -> dict[str, Any]:
        engine = self.engine
        if engine is None:
            return {"active": 0, "trunks": {}}
        trunks = {
            trunk.name: dataclasses.asdict(engine.admission_stats(trunk.name))
            for trunk in self.config.trunks
        }
        return {"active": engine.active_calls, "trunks": trunks}

    def _service_counters(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for services in self._services.values():
            for name, value in services.counters.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def _media_section(self, relay: MediaRelay) -> dict[str, Any]:
        # Ended calls' counters plus the live ones: the totals only grow.
        totals = dict(self._media_totals)
        for session in relay.sessions.values():
            _add_counters(totals, session.snapshot())
        return {"sessions": len(relay.sessions), "totals": totals}

    def subscribe(self, size: int = 1000) -> Subscription:
        """Every later event (`sbc.node_views`), until the node stops."""
        return self.events.subscribe(size)

    # Actions

    def hang_up(self, call_id: str, reason: str = "operator") -> bool:
        """End a call on both legs; False when no such call is in progress."""
        if self.engine is None:
            return False
        ended = self.engine.end_call(call_id, reason, asyncio.get_running_loop().time())
        self.endpoint.wake()
        return ended

    def set_trunk_mode(self, name: str, mode: TrunkMode) -> TrunkView:
        """Enable, drain or disable a trunk (LookupError when unknown)."""
        view = self.trunk(name)
        self._status[name].mode = mode
        if self.engine is not None:
            if mode is TrunkMode.ENABLED:
                self.engine.blocked_trunks.discard(name)
            else:
                self.engine.blocked_trunks.add(name)
        _log.info("trunk %s: %s (was %s)", name, mode.value, view.mode.value)
        self._drained(name)
        self._publish_trunk(name)
        return self.trunk(name)

    async def tunnel_action(self, name: str, action: str) -> None:
        """initiate, terminate or rekey the IPsec of a trunk or mesh peer."""
        if self.secure is None:
            raise NodeUnavailable("no IPsec runtime runs on this node")
        await self.secure.tunnel_action(name, action)

    def _drained(self, name: str) -> None:
        status = self._status.get(name)
        if status is None or status.mode is not TrunkMode.DRAINING:
            return
        if self._trunk_calls(name) == 0:
            status.mode = TrunkMode.DISABLED
            self._publish_trunk(name)

    def _publish_trunk(self, name: str) -> None:
        status = self._status.get(name)
        if status is None:
            return
        state = _trunk_state(status, self._trunk_calls(name))
        if state != status.published:
            status.published = state
            self.events.publish(TrunkStateChanged(name, *state))


class _RecordTap:
    """The call records' writer, telling the node of each call that ended."""

    def __init__(
        self, inner: CallRecordWriter, ended: Callable[[CallRecord], None]
    ) -> None:
        self._inner = inner
        self._ended = ended

    def write(self, record: CallRecord) -> None:
        self._inner.write(record)
        self._ended(record)


def _trunk_state(status: _TrunkStatus, calls: int) -> tuple[str, str]:
    if status.mode is TrunkMode.DISABLED:
        return "disabled", "disabled by an operator"
    if status.mode is TrunkMode.DRAINING:
        return "draining", f"draining: {calls} calls left"
    if status.reachable is False or status.registration == "failed":
        return "down", status.reason
    return "up", ""


def _add_counters(totals: dict[str, int], legs: dict[str, Any]) -> None:
    """Add each leg's integer counters (``{"0.A": {"packets": 3}}``) to totals."""
    for counters in legs.values():
        if not isinstance(counters, dict):
            continue
        for key, value in counters.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value


def _keys(config: Config) -> Iterator[ObjectKey]:
    for kind, section in _SECTIONS:
        for item in getattr(config, section):
            yield kind, item.name


def _objects(config: Config) -> dict[ObjectKey, BaseModel]:
    return {
        (kind, item.name): item
        for kind, section in _SECTIONS
        for item in getattr(config, section)
    }


def _changed_keys(old: Config, new: Config) -> Iterator[ObjectKey]:
    """Objects of ``new`` that are not running as they are in ``new``."""
    running = _objects(old)
    for key, item in _objects(new).items():
        if running.get(key) != item:
            yield key
    if old.media != new.media:
        yield MEDIA_KEY


def _refused(
    config: Config, changed: set[ObjectKey], refused: ApplyRefused
) -> dict[ObjectKey, Outcome]:
    """The refused object failed with its reason, the other changed ones
    with a pointer to it; unchanged objects run on."""
    failed = f"not applied: {refused.key[0]} {refused.key[1]!r} failed"
    outcomes = {
        key: Outcome(False, failed) if key in changed else Outcome(True)
        for key in _keys(config)
    }
    outcomes[refused.key] = Outcome(False, refused.reason)
    return outcomes


def _runtime_refused(config: Config, running: Config) -> ObjectKey:
    """The object a failure of the IPsec runtime is reported on: the first
    profile new or changed since ``running`` (the likely culprit), else the
    first profile."""
    if config.ipsec_profiles:
        before = {profile.name: profile for profile in running.ipsec_profiles}
        changed = [p for p in config.ipsec_profiles if before.get(p.name) != p]
        return "ipsec_profile", (changed or config.ipsec_profiles)[0].name
    return _secure_object(config) or MEDIA_KEY


def _secure_object(config: Config) -> ObjectKey | None:
    """The first object that needs the IPsec runtime (a profile alone does
    not): a protected trunk, a mesh peer, or an ipsec listener (a binding in
    its data plane, created over the API before the trunk that uses it)."""
    for trunk in config.trunks:
        if trunk.ipsec_profile is not None:
            return "trunk", trunk.name
    for peer in config.mesh_peers:
        return "mesh_peer", peer.name
    for listener in config.listeners:
        if listener.ipsec:
            return "listener", listener.name
    return None
