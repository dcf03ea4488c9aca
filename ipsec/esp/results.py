"""What the engine hands back per packet, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .events import LifetimeKind


class DropReason(Enum):
    """Why an inbound packet was discarded (counted per SA, never raised)."""

    BAD_ICV = "bad ICV"
    REPLAY = "replayed sequence number"
    OUTSIDE_WINDOW = "sequence number left of the replay window"
    UNKNOWN_SPI = "no SA for this SPI"
    BAD_PADDING = "padding not 1, 2, 3, ..."
    TRUNCATED = "shorter than its headers and ICV"
    POLICY_MISMATCH = "inner packet not allowed on this SA"
    EXPIRED = "SA past its hard lifetime"
    MALFORMED = "malformed header"
    DUMMY = "dummy packet (next header 59)"


@dataclass(frozen=True, slots=True)
class Drop:
    """An inbound packet discarded for ``reason``.

    One instance exists per reason (see ``DROPS``), so a flood of bad packets
    allocates nothing.
    """

    reason: DropReason


DROPS = {reason: Drop(reason) for reason in DropReason}


# Opened and Unprotected are made once per packet: plain slotted dataclasses
# build in a third of the time a frozen one takes. Treat them as read-only.


@dataclass(slots=True)
class Opened:
    """An ESP payload that passed the ICV, replay and padding checks."""

    next_header: int
    """The protocol of ``payload`` (4 or 41 for a tunnelled IP packet)."""
    payload: bytes
    sequence: int
    """The full (ESN-inferred) sequence number."""


@dataclass(slots=True)
class Unprotected:
    """An IP packet with its ESP or AH removed."""

    packet: bytes
    """Transport mode: the original IP packet; tunnel mode: the inner packet."""
    next_header: int
    """The protocol the ESP/AH header carried (4 or 41 in tunnel mode)."""
    sequence: int


class SAExpired(Exception):
    """An outbound SA refused a packet: past its hard lifetime or sequence space."""

    def __init__(self, spi: int, kind: LifetimeKind) -> None:
        super().__init__(f"SA 0x{spi:08x} expired ({kind.value})")
        self.spi = spi
        self.kind = kind


class MalformedPacket(ValueError):
    """An outbound packet handed to protect() is not a well-formed IP packet."""
