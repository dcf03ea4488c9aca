"""Per-path counters: plain attributes, cheap to bump and to read."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PathDrop(enum.Enum):
    """Why a data path dropped a packet before or after the SA engine.

    Drops decided by an SA (bad ICV, replay, ...) are counted by the engine
    under its own ``DropReason``; these are the data plane's own reasons.
    """

    NO_POLICY = "no_policy"
    """No SPD entry covers the packet; it is dropped, never sent in clear."""
    DISCARD = "discard"
    """The SPD entry that covers the packet says DISCARD."""
    BYPASS_REFUSED = "bypass_refused"
    """BYPASS on a path that only carries protected traffic (the TUN)."""
    TRAPPED = "trapped"
    """A TRAP entry covers the packet: it raised an acquire and was dropped."""
    NO_SA = "no_sa"
    """The policy names an SA that is not installed."""
    SA_EXPIRED = "sa_expired"
    """The outbound SA is past its hard lifetime or its sequence space."""
    MALFORMED = "malformed"
    """A datagram or inner packet too short or inconsistent to parse."""
    NO_HANDLER = "no_handler"
    """Decrypted, but nothing is registered for its (address, port)."""
    SEND_FAILED = "send_failed"
    """The kernel refused the send (buffer full, no route, too big)."""


@dataclass(slots=True)
class PathCounters:
    """Traffic and drops on one path (UDP encapsulation, raw ESP, TUN, ...)."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: enum.Enum) -> None:
        """Count one dropped packet under ``reason``'s value."""
        key = reason.value if isinstance(reason.value, str) else reason.name.lower()
        self.drops[key] = self.drops.get(key, 0) + 1

    def snapshot(self) -> dict[str, object]:
        """A copy for the admin plane, safe to serialise."""
        return {
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "drops": dict(self.drops),
        }
