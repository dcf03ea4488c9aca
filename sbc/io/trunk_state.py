"""Trunk registration and OPTIONS keepalive inside ``sbc serve --config``.

`TrunkServices` builds the registration clients and keepalive monitors the
configuration asks for, attaches them to the call engine and starts them.
Their typed events (`Registered`, `TrunkWentDown`, ...) are logged, counted
and handed to every subscriber, the admin plane's future feed. At shutdown
`stop` removes the bindings (REGISTER with Expires: 0) and the caller waits
a bounded time for their answers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

from sbc.b2bua import B2bua, LocalEndpoint
from sbc.b2bua.keepalive import (
    KeepaliveEvent,
    KeepaliveMonitor,
    TargetCameUp,
    TargetWentDown,
    TrunkCameUp,
    TrunkWentDown,
    keepalive_monitors,
)
from sbc.b2bua.registration import (
    Registered,
    RegistrationClient,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
    registration_clients,
)
from sbc.b2bua.settings import RandomSource
from sbc.config.model import Config
from sbc.io.calls import local_endpoints
from sbc.io.endpoint import SipEndpoint
from sbc.sip.events import TransactionEvent
from sbc.sip.transaction import TransactionLayer

_log = logging.getLogger("sbc.trunks")

TrunkEvent = RegistrationEvent | KeepaliveEvent
"""Everything a trunk service reports; published to subscribers."""

Subscriber = Callable[[TrunkEvent], None]

# How long shutdown waits for the registrars to answer the removals: one
# Timer F would be 32 s, too long for a service manager's stop.
UNREGISTER_WAIT = 4.0

# The counter each event kind adds one to (shown in the shutdown log).
_COUNTER_OF: dict[type, str] = {
    Registered: "registered",
    RegistrationFailed: "registration_failed",
    Unregistered: "unregistered",
    TargetWentDown: "target_down",
    TargetCameUp: "target_up",
    TrunkWentDown: "trunk_down",
    TrunkCameUp: "trunk_up",
}


class _Published:
    """Runs one service for the engine and publishes its events as soon as
    it has handled an event or a timer."""

    def __init__(
        self,
        service: RegistrationClient | KeepaliveMonitor,
        publish: Callable[[TrunkEvent], None],
    ) -> None:
        self.service = service
        self._publish = publish

    def handle_event(self, event: TransactionEvent, now: float) -> bool:
        handled = self.service.handle_event(event, now)
        if handled:
            self.drain()
        return handled

    def handle_timer(self, now: float) -> None:
        self.service.handle_timer(now)
        self.drain()

    def next_timer(self) -> float | None:
        return self.service.next_timer()

    def drain(self) -> None:
        event = self.service.next_event()
        while event is not None:
            self._publish(event)
            event = self.service.next_event()


class TrunkServices:
    """The registration clients and keepalive monitors of one engine."""

    def __init__(
        self,
        layer: TransactionLayer,
        engine: B2bua,
        config: Config,
        endpoints: Sequence[LocalEndpoint],
        rng: RandomSource,
    ) -> None:
        by_transport = {e.transport.upper(): e for e in endpoints}
        self.clients = registration_clients(layer, config, by_transport, rng)
        self.monitors = keepalive_monitors(
            layer, config, by_transport, rng, engine.down_trunks
        )
        self.counters = dict.fromkeys(_COUNTER_OF.values(), 0)
        self._subscribers: list[Subscriber] = []
        services: list[RegistrationClient | KeepaliveMonitor] = [
            *self.clients,
            *self.monitors,
        ]
        self._runners = [_Published(service, self._publish) for service in services]
        for runner in self._runners:
            engine.attach(runner)

    def detach_from(self, engine: B2bua) -> None:
        """Take the services off the engine (after `stop` and its answers)."""
        for runner in self._runners:
            engine.detach(runner)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with every later event (it must not raise)."""
        self._subscribers.append(subscriber)

    def start(self, now: float) -> None:
        """Send the first REGISTERs; the first pings go at the next timer."""
        for client in self.clients:
            client.start(now)
        for monitor in self.monitors:
            monitor.start(now)
        self._drain()

    def stop(self, now: float) -> None:
        """Stop pinging and remove every binding (RFC 3261 §10.2.2)."""
        for monitor in self.monitors:
            monitor.stop()
        for client in self.clients:
            client.stop(now)
        self._drain()

    @property
    def unregistering(self) -> int:
        """Clients still waiting for the answer to their removal."""
        return sum(
            client.state is RegistrationState.UNREGISTERING for client in self.clients
        )

    def _drain(self) -> None:
        for runner in self._runners:
            runner.drain()

    def _publish(self, event: TrunkEvent) -> None:
        self.counters[_COUNTER_OF[type(event)]] += 1
        _log.info("trunk event: %s", _describe(event))
        for subscriber in self._subscribers:
            subscriber(event)


def start_trunk_services(
    endpoint: SipEndpoint, engine: B2bua, config: Config
) -> TrunkServices:
    """Attach and start the trunk services of ``engine`` (the TU of
    ``endpoint``), and send the first REGISTERs at once."""
    endpoints = local_endpoints(config, endpoint.listening)
    # Call-IDs, tags and branches must not be guessable (RFC 3261 §19.3).
    rng = random.SystemRandom()
    services = TrunkServices(endpoint.transactions, engine, config, endpoints, rng)
    now = asyncio.get_running_loop().time()
    services.start(now)
    endpoint.wake()
    return services


async def stop_trunk_services(
    endpoint: SipEndpoint, services: TrunkServices, wait: float = UNREGISTER_WAIT
) -> None:
    """Remove the bindings and wait at most ``wait`` seconds for the 200s
    (and any challenge on the way, answered by the clients)."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    services.stop(now)
    endpoint.wake()
    deadline = now + wait
    while services.unregistering and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if services.unregistering:
        _log.warning(
            "%d registrars did not confirm the removal", services.unregistering
        )


def _describe(event: TrunkEvent) -> str:
    if isinstance(event, Registered):
        return f"{event.trunk} registered"
    if isinstance(event, RegistrationFailed):
        return f"{event.trunk} registration failed ({event.status or 'no answer'})"
    if isinstance(event, Unregistered):
        return f"{event.trunk} unregistered"
    if isinstance(event, TrunkWentDown):
        return f"{event.trunk} down"
    if isinstance(event, TrunkCameUp):
        return f"{event.trunk} up"
    target = event.target
    state = "up" if isinstance(event, TargetCameUp) else "down"
    return f"{target.trunk} target {target.host}:{target.port} {state}"


__all__ = [
    "UNREGISTER_WAIT",
    "Subscriber",
    "TrunkEvent",
    "TrunkServices",
    "start_trunk_services",
    "stop_trunk_services",
]
