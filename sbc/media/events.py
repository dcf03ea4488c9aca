"""What the media relay reports to the B2BUA."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MediaTimedOut:
    """No RTP was accepted on any stream of a call for too long."""

    call_id: str
    """The Call-ID the session was allocated under."""
    idle_for: float
    """Seconds since the last accepted RTP packet (or since allocation)."""


MediaEvent = MediaTimedOut
