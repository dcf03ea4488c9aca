"""Per-call RTP/RTCP port pairs from a configured range (RFC 3550 §11).

RTP takes an even port and RTCP the next odd one. Freed pairs go to the back
of the queue, so a port is reused as late as possible and stray packets of
an ended call rarely reach the next one.
"""

from __future__ import annotations

from collections import deque

from sbc.media.errors import PortsExhausted


class PortAllocator:
    """Hands out even RTP ports; the RTCP port is always ``rtp_port + 1``."""

    __slots__ = ("_free", "_taken")

    def __init__(self, port_min: int, port_max: int) -> None:
        first = port_min + (port_min & 1)
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._taken: set[int] = set()

    @property
    def available(self) -> int:
        return len(self._free)

    def take(self) -> int:
        """An even RTP port that is not in use by this allocator."""
        if not self._free:
            raise PortsExhausted("no free RTP/RTCP port pair in the media range")
        port = self._free.popleft()
        self._taken.add(port)
        return port

    def release(self, rtp_port: int) -> None:
        """Give a pair back; releasing a port twice or a foreign one is a no-op."""
        if rtp_port in self._taken:
            self._taken.discard(rtp_port)
            self._free.append(rtp_port)
