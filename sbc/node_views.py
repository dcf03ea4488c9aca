"""What a running node shows the admin plane: views, events and their bus.

Views are frozen snapshots built on demand; events are small typed records
named in the past tense. The bus hands every event to each subscriber's own
bounded queue, so a slow reader (an SSE client on a bad link) loses its own
oldest events, counted, and never holds up the engines.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


class TrunkMode(enum.Enum):
    """What an operator lets a trunk do (not stored: a restart enables all)."""

    ENABLED = "enabled"
    DRAINING = "draining"
    """No new call from or to it; calls in progress continue. Becomes
    ``disabled`` when its last call ends."""
    DISABLED = "disabled"
    """No new call in either direction: new INVITEs from it get 503."""


@dataclass(frozen=True, slots=True)
class CallView:
    """One call in progress; times in Unix seconds."""

    call_id: str
    """Call-ID of the A-leg (the key for hanging up)."""
    a_trunk: str
    b_trunk: str | None
    calling: str | None
    called: str | None
    state: str
    """``Proceeding``, ``Answered`` or ``Ending`` (as the A-leg sees it)."""
    start_time: float
    answer_time: float | None
    media: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    """Relay counters per ``<stream>.<leg>`` when the call's media is anchored."""


@dataclass(frozen=True, slots=True)
class TrunkView:
    name: str
    kind: str
    state: str
    """``up``, ``down``, ``draining`` or ``disabled``."""
    reason: str
    """Why the trunk is not up (the last registration or keepalive event)."""
    mode: TrunkMode
    registration: str
    """``none`` (not asked for), ``pending``, ``registered`` or ``failed``."""
    reachable: bool | None
    """The keepalive's verdict; None when the trunk has no keepalive."""
    active_calls: int
    protection: str | None = None
    """The secure runtime's state of the trunk's IPsec (None: not protected)."""


# Events (published to subscribers of the node's bus)


@dataclass(frozen=True, slots=True)
class TrunkStateChanged:
    trunk: str
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    trunk: str
    """The trunk the call came from."""


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    a_trunk: str | None
    b_trunk: str | None
    final_status: int
    disposition: str
    end_reason: str | None


@dataclass(frozen=True, slots=True)
class ConfigurationApplied:
    applied: int
    """Objects running after the change."""
    failed: int
    """Objects refused (the node kept running as it was)."""


class Subscription:
    """One subscriber's queue; iterate it until the bus closes."""

    def __init__(self, bus: EventBus, size: int) -> None:
        self._bus = bus
        self._size = size
        # Unbounded for the end marker; events are kept to ``size`` by put.
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.lost = 0
        """Events dropped because this subscriber fell behind."""

    def put(self, event: object) -> None:
        if self._queue.qsize() >= self._size:
            self._queue.get_nowait()
            self.lost += 1
            self._bus.lost += 1
        self._queue.put_nowait(event)

    async def get(self, timeout: float | None = None) -> object | None:
        """The next event; None at timeout. Raises EOFError once closed."""
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if event is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # later calls see it too
            raise EOFError
        return event

    async def __aiter__(self) -> AsyncIterator[object]:
        while True:
            try:
                event = await self.get()
            except EOFError:
                return
            if event is not None:
                yield event

    def close(self) -> None:
        """Unsubscribe; what is queued can still be read, then it ends."""
        self._bus.unsubscribe(self)
        self.end()

    def end(self) -> None:
        self._queue.put_nowait(_CLOSED)


_CLOSED = object()


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self.published = 0
        self.lost = 0
        """Events dropped for subscribers that fell behind, since start."""

    def subscribe(self, size: int = 1000) -> Subscription:
        subscription = Subscription(self, size)
        if self._closed:
            subscription.end()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, event: object) -> None:
        self.published += 1
        for subscription in self._subscriptions:
            subscription.put(event)

    def close(self) -> None:
        """End every subscription (the node stops)."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.end()
        self._subscriptions.clear()


def event_name(event: object) -> str:
    """The SSE event name: the event's class name (``TrunkStateChanged``)."""
    return type(event).__name__


def event_data(event: object) -> dict[str, Any]:
    """The event's fields as JSON-ready values."""
    fields = getattr(event, "__dataclass_fields__", {})
    return {name: _plain(getattr(event, name)) for name in fields}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return event_data(value)
    return str(value)
