"""The node's event bus: one bounded queue per subscriber, closed at stop."""

from __future__ import annotations

import asyncio

from sbc.node_views import (
    CallStarted,
    EventBus,
    TrunkMode,
    TrunkStateChanged,
    event_data,
    event_name,
)


def test_slow_subscriber_loses_its_oldest_events_and_the_loss_is_counted():
    async def scenario():
        bus = EventBus()
        slow = bus.subscribe(size=2)
        fast = bus.subscribe(size=10)
        for number in range(5):
            bus.publish(CallStarted(f"call-{number}", "pbx"))
        slow.close()  # the count outlives the subscriber
        bus.close()
        return [e async for e in slow], [e async for e in fast], bus

    slow_seen, fast_seen, bus = asyncio.run(scenario())

    assert [e.call_id for e in slow_seen] == ["call-3", "call-4"]
    assert len(fast_seen) == 5
    assert (bus.published, bus.lost) == (5, 3)


def test_get_times_out_with_none_and_a_closed_bus_ends_every_reader():
    async def scenario():
        bus = EventBus()
        subscription = bus.subscribe()
        idle = await subscription.get(timeout=0.01)
        bus.close()
        late = bus.subscribe()
        ended = []
        for reader in (subscription, late):
            try:
                await reader.get(timeout=1)
            except EOFError:
                ended.append(True)
        return idle, ended

    idle, ended = asyncio.run(scenario())

    assert idle is None
    assert ended == [True, True]


def test_events_serialise_by_class_name_and_plain_fields():
    event = TrunkStateChanged("carrier", "down", "no answer to OPTIONS")

    assert event_name(event) == "TrunkStateChanged"
    assert event_data(event) == {
        "trunk": "carrier",
        "state": "down",
        "reason": "no answer to OPTIONS",
    }
    assert event_data(_WithMode(TrunkMode.DRAINING)) == {"mode": "draining"}


class _WithMode:
    __dataclass_fields__ = {"mode": None}  # noqa: RUF012 - shaped like a dataclass

    def __init__(self, mode: TrunkMode) -> None:
        self.mode = mode
