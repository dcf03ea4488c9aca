"""Per-SA counters and lifetime limits (RFC 4301 §4.4.2.1)."""

from __future__ import annotations

import math
from collections import deque

from .config import Lifetime
from .events import (
    HardLifetimeReached,
    LifetimeEvent,
    LifetimeKind,
    SoftLifetimeReached,
)
from .results import DropReason


class SACounters:
    """Traffic through one SA; plain attributes, cheap to read at any time."""

    __slots__ = ("packets", "bytes", "drops")

    def __init__(self) -> None:
        self.packets = 0
        """Packets protected (outbound) or accepted (inbound)."""
        self.bytes = 0
        """Payload bytes of those packets, before protection."""
        self.drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)

    def __repr__(self) -> str:
        dropped = {reason.name: n for reason, n in self.drops.items() if n}
        return (
            f"SACounters(packets={self.packets}, bytes={self.bytes}, drops={dropped})"
        )


class LifetimeTracker:
    """Fires each soft and hard limit once, as typed events.

    The SA compares its counters against the ``*_alarm`` thresholds on every
    packet (three comparisons) and calls ``check`` only when one is crossed.
    """

    __slots__ = (
        "spi",
        "_soft",
        "_hard",
        "_events",
        "expired_by",
        "bytes_alarm",
        "packets_alarm",
        "time_alarm",
        "sequence_alarm",
    )

    def __init__(
        self,
        spi: int,
        soft: Lifetime,
        hard: Lifetime,
        added_at: float,
        sequence_limit: int | None,
    ) -> None:
        self.spi = spi
        self._soft = _limits(soft, added_at, _soft_sequence_limit(sequence_limit))
        self._hard = _limits(hard, added_at, sequence_limit)
        self._events: deque[LifetimeEvent] = deque()
        self.expired_by: LifetimeKind | None = None
        self._set_alarms()

    def check(self, bytes_: int, packets: int, sequence: int, now: float) -> None:
        """Queue the events for every limit the given measures have reached."""
        measures = {
            LifetimeKind.BYTES: bytes_,
            LifetimeKind.PACKETS: packets,
            LifetimeKind.SECONDS: now,
            LifetimeKind.SEQUENCE: sequence,
        }
        for kind in _reached(self._soft, measures):
            self._events.append(SoftLifetimeReached(self.spi, kind))
        for kind in _reached(self._hard, measures):
            self._events.append(HardLifetimeReached(self.spi, kind))
            self._expire(kind)
        self._set_alarms()

    def next_event(self) -> LifetimeEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        deadline = min(
            self._soft.get(LifetimeKind.SECONDS, math.inf),
            self._hard.get(LifetimeKind.SECONDS, math.inf),
        )
        return None if deadline == math.inf else deadline

    def _expire(self, kind: LifetimeKind) -> None:
        # After the hard limit nothing is left to announce.
        if self.expired_by is None:
            self.expired_by = kind
        self._soft.clear()
        self._hard.clear()

    def _set_alarms(self) -> None:
        def alarm(kind: LifetimeKind) -> float:
            return min(self._soft.get(kind, math.inf), self._hard.get(kind, math.inf))

        self.bytes_alarm = alarm(LifetimeKind.BYTES)
        self.packets_alarm = alarm(LifetimeKind.PACKETS)
        self.time_alarm = alarm(LifetimeKind.SECONDS)
        self.sequence_alarm = alarm(LifetimeKind.SEQUENCE)


def _limits(
    lifetime: Lifetime, added_at: float, sequence_limit: int | None
) -> dict[LifetimeKind, float]:
    limits: dict[LifetimeKind, float | None] = {
        LifetimeKind.BYTES: lifetime.bytes,
        LifetimeKind.PACKETS: lifetime.packets,
        LifetimeKind.SECONDS: (
            None if lifetime.seconds is None else added_at + lifetime.seconds
        ),
        LifetimeKind.SEQUENCE: sequence_limit,
    }
    return {kind: value for kind, value in limits.items() if value is not None}


def _soft_sequence_limit(sequence_limit: int | None) -> int | None:
    # Ask for a rekey with a sixteenth of the sequence space left, so the new
    # SA is up long before the old one must stop (RFC 4303 §3.3.3).
    if sequence_limit is None:
        return None
    return sequence_limit - (sequence_limit >> 4)


def _reached(
    limits: dict[LifetimeKind, float], measures: dict[LifetimeKind, float]
) -> list[LifetimeKind]:
    reached = [kind for kind, limit in limits.items() if measures[kind] >= limit]
    for kind in reached:
        del limits[kind]
    return reached
