"""Per-stream counters for CDRs and metrics.

Bad input is counted by reason instead of logged: whoever sends to a media
port controls it, and a warning per packet would be an outage of its own.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum


class MediaDropReason(StrEnum):
    """Why the relay threw a packet away."""

    SHORT = "short"
    """Shorter than the fixed RTP (12) or RTCP (8) header."""
    BAD_VERSION = "bad_version"
    """Version field other than 2 (RFC 3550 §5.1)."""
    WRONG_SOURCE = "wrong_source"
    """From an address other than the latched or signalled one."""
    NO_DESTINATION = "no_destination"
    """The other leg has no remote address yet (its offer or answer is due)."""
    SRTP_UNPROTECT_FAILED = "srtp_unprotect_failed"
    """Authentication, replay or decryption failed (RFC 3711 §3.3)."""
    SRTP_PROTECT_FAILED = "srtp_protect_failed"
    """libsrtp refused to protect the packet for the other leg."""
    SEND_FAILED = "send_failed"
    """The socket of the other leg was closed or refused the datagram."""


class ReceiveStatistics:
    """RFC 3550 §6.4.1 / Appendix A.3 and A.8 for the RTP one leg sends us.

    The relay's core updates these fields in line for every packet it
    accepts, which spares a Python call on the per-packet path.
    """

    __slots__ = (
        "ssrc",
        "base_seq",
        "max_seq",
        "cycles",
        "received",
        "jitter",
        "transit",
    )

    def __init__(self) -> None:
        self.ssrc = -1
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.jitter = 0.0
        """Interarrival jitter in RTP timestamp units (RFC 3550 A.8)."""
        self.transit = 0
        """Arrival minus RTP timestamp of the last packet, in RTP units."""

    @property
    def expected(self) -> int:
        if self.ssrc < 0:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost; duplicates can make it negative (§6.4.1)."""
        return self.expected - self.received

    def restart(self, ssrc: int, seq: int, transit: int) -> None:
        """A new SSRC restarts the numbering and the estimator (RFC 3550 §8.2).

        ``transit`` is the new source's first: its jitter step is then zero,
        as the estimator needs two packets.
        """
        self.ssrc, self.base_seq, self.max_seq = ssrc, seq, seq
        self.cycles = self.received = 0
        self.jitter = 0.0
        self.transit = transit


class StreamCounters:
    """What one leg of one stream sent us, what we sent it, what we dropped."""

    __slots__ = (
        "packets_received",
        "bytes_received",
        "packets_sent",
        "bytes_sent",
        "rtcp_received",
        "rtcp_sent",
        "drops",
        "statistics",
        "clock_rate",
        "reported_fraction_lost",
        "reported_packets_lost",
        "reported_jitter",
    )

    def __init__(self) -> None:
        self.packets_received = 0
        self.bytes_received = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.rtcp_received = 0
        self.rtcp_sent = 0
        self.drops: Counter[MediaDropReason] = Counter()
        self.statistics = ReceiveStatistics()
        self.clock_rate = 8000
        # What the peer said in its last receiver report about our media.
        self.reported_fraction_lost: float | None = None
        self.reported_packets_lost: int | None = None
        self.reported_jitter: float | None = None

    def snapshot(self) -> dict[str, float | int | None]:
        """Plain numbers for the CDR, logs and the admin plane."""
        stats = self.statistics
        numbers: dict[str, float | int | None] = {
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "rtcp_received": self.rtcp_received,
            "rtcp_sent": self.rtcp_sent,
            "packets_lost": max(stats.lost, 0),
            "jitter_ms": 1000.0 * stats.jitter / self.clock_rate,
            "reported_fraction_lost": self.reported_fraction_lost,
            "reported_packets_lost": self.reported_packets_lost,
            "reported_jitter_ms": self.reported_jitter,
        }
        numbers.update({f"drop.{reason.value}": n for reason, n in self.drops.items()})
        return numbers
