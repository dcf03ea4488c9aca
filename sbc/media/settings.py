"""Settings of the media relay, one documented field each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """How the relay allocates ports and when it gives up on silent calls."""

    port_min: int = 20000
    """Lowest port handed out; rounded up to an even number (RTP is even)."""

    port_max: int = 29999
    """Highest port handed out (an RTCP port, so an odd number fits best)."""

    media_timeout: float = 60.0
    """Seconds without any accepted RTP on a call before MediaTimedOut."""

    timeout_check_interval: float = 1.0
    """How often the asyncio glue polls sessions for media timeouts."""

    latch_any_source: bool = False
    """Default for trunks: latch to the first source whatever its address
    (for peers behind NAT), instead of only the signalled address."""

    receive_buffer: int | None = None
    """SO_RCVBUF for every media socket; None keeps the kernel default."""

    def __post_init__(self) -> None:
        if not 1024 <= self.port_min < self.port_max <= 65535:
            raise ValueError("media ports need 1024 <= port_min < port_max <= 65535")
        if self.port_max - _even(self.port_min) < 1:
            raise ValueError("the media port range holds no RTP/RTCP pair")
        if self.media_timeout <= 0 or self.timeout_check_interval <= 0:
            raise ValueError("media_timeout and timeout_check_interval must be > 0")


def _even(port: int) -> int:
    return port + (port & 1)
