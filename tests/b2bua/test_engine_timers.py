"""The call engine's timer heap: order, cancellation, and nothing kept alive."""

from __future__ import annotations

import gc
import weakref

from sbc.b2bua.timers import TimerQueue


class Call:
    """Stands for the state a timer's closure would keep alive."""


def test_timers_fire_in_deadline_order_and_cancelled_ones_never_fire():
    queue = TimerQueue()
    fired: list[str] = []
    queue.schedule(3.0, lambda now: fired.append("c"))
    cancelled = queue.schedule(1.0, lambda now: fired.append("a"))
    queue.schedule(2.0, lambda now: fired.append("b"))

    cancelled.cancel()
    queue.fire_due(2.5)

    assert fired == ["b"]
    assert len(queue) == 1
    assert queue.next_deadline() == 3.0


def test_cancel_releases_what_the_action_holds_before_the_deadline():
    queue = TimerQueue()
    call = Call()
    alive = weakref.ref(call)
    timer = queue.schedule(1800.0, lambda now, call=call: None)
    del call

    timer.cancel()
    gc.collect()

    assert alive() is None


def test_heap_stays_proportional_to_live_timers_under_cancellation():
    queue = TimerQueue()
    keep = [queue.schedule(10_000.0 + i, lambda now: None) for i in range(10)]

    for i in range(10_000):
        queue.schedule(1800.0 + i, lambda now: None).cancel()

    assert len(queue) == len(keep)
    assert len(queue._heap) < 200
    assert queue.next_deadline() == 10_000.0


def test_cancelling_twice_or_after_firing_counts_nothing():
    queue = TimerQueue()
    fired = queue.schedule(1.0, lambda now: None)
    pending = queue.schedule(5.0, lambda now: None)
    queue.fire_due(1.0)

    fired.cancel()
    pending.cancel()
    pending.cancel()

    assert len(queue) == 0
    assert queue.next_deadline() is None
