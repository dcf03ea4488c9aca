"""One heap of the call engine's own timers, with lazy cancellation."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class EngineTimer:
    """A deadline and what to do then; `cancel` makes it a no-op."""

    deadline: float
    action: Callable[[float], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class TimerQueue:
    """Timers in deadline order; cancelled ones are dropped when reached."""

    __slots__ = ("_heap", "_sequence")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, EngineTimer]] = []
        self._sequence = 0

    def schedule(self, deadline: float, action: Callable[[float], None]) -> EngineTimer:
        timer = EngineTimer(deadline, action)
        self._sequence += 1
        heapq.heappush(self._heap, (deadline, self._sequence, timer))
        return timer

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def fire_due(self, now: float) -> None:
        """Run every live timer due at or before `now`, in deadline order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if not timer.cancelled:
                timer.cancelled = True
                timer.action(now)

    def __len__(self) -> int:
        """Live timers (cancelled ones still in the heap are not counted)."""
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)
