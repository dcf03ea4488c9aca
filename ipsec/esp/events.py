"""Lifetime events an SA queues for the IKE daemon (RFC 4301 §4.4.2.1)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class LifetimeKind(Enum):
    """Which limit was reached."""

    BYTES = "bytes"
    PACKETS = "packets"
    SECONDS = "seconds"
    SEQUENCE = "sequence number space"


@dataclass(frozen=True, slots=True)
class SoftLifetimeReached:
    """Time to rekey: the SA still works."""

    spi: int
    kind: LifetimeKind


@dataclass(frozen=True, slots=True)
class HardLifetimeReached:
    """The SA now refuses every packet and should be deleted."""

    spi: int
    kind: LifetimeKind


LifetimeEvent = SoftLifetimeReached | HardLifetimeReached
