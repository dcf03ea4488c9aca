"""One heap of the call engine's own timers, with lazy cancellation."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

# Below this many cancelled entries the heap is never rebuilt: popping them
# when they come due costs less than rebuilding a small heap.
_COMPACT_AFTER = 64


def _idle(now: float) -> None:
    """What a cancelled timer does."""


@dataclass(slots=True, eq=False)
class EngineTimer:
    """A deadline and what to do then; `cancel` makes it a no-op."""

    deadline: float
    action: Callable[[float], None]
    queue: TimerQueue | None = None
    cancelled: bool = False

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        # The action's closure holds its whole call (legs, dialogs, messages):
        # drop it now rather than when the deadline, maybe Session-Expires
        # half an hour away, pops the entry.
        self.action = _idle
        if self.queue is not None:
            self.queue.count_cancelled()


class TimerQueue:
    """Timers in deadline order; cancelled ones are dropped when reached, or
    all at once when they make up most of the heap."""

    __slots__ = ("_cancelled", "_heap", "_sequence")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, EngineTimer]] = []
        self._sequence = 0
        self._cancelled = 0

    def schedule(self, deadline: float, action: Callable[[float], None]) -> EngineTimer:
        timer = EngineTimer(deadline, action, self)
        self._sequence += 1
        heapq.heappush(self._heap, (deadline, self._sequence, timer))
        return timer

    def count_cancelled(self) -> None:
        """Note one more cancelled timer still in the heap; rebuild when they
        are the majority, so the heap stays proportional to live timers."""
        self._cancelled += 1
        if self._cancelled > _COMPACT_AFTER and 2 * self._cancelled > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def fire_due(self, now: float) -> None:
        """Run every live timer due at or before `now`, in deadline order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            # Fired timers are not counted as cancelled: they left the heap.
            timer.cancelled = True
            timer.action(now)

    def __len__(self) -> int:
        """Live timers (cancelled ones still in the heap are not counted)."""
        return len(self._heap) - self._cancelled
