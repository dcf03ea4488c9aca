"""Per-stream counters for CDRs and metrics.

Bad input is counted by reason instead of logged: whoever sends to a media
port controls it, and a warning per packet would be an outage of its own.
"""

from __future__ import annotations

import struct
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


SAMPLE_EVERY = 8
"""One accepted RTP packet in this many has its header read (a power of 2)."""

_read_seq_timestamp_ssrc = struct.Struct("!HII").unpack_from
"""Sequence number, timestamp and SSRC at offsets 2, 4 and 8 (RFC 3550 §5.1)."""


class ReceiveStatistics:
    """RFC 3550 §6.4.1 (A.1, A.3, A.8) for the RTP one leg sends us, read lazily.

    Reading every header cost the relay half its per-packet work. The core
    therefore counts each accepted packet, checks its SSRC bytes and keeps a
    reference to it; ``sample`` reads one packet in SAMPLE_EVERY, and every
    packet whose SSRC changed. Loss stays exact: the highest sequence number
    only needs the packets it is read from to be less than 2**15 apart, and
    ``catch_up`` reads the last packet before ``expected`` is taken. Jitter
    is the A.8 estimator fed one pair of consecutive packets in SAMPLE_EVERY:
    the same quantity, averaged over 16 * SAMPLE_EVERY packets instead of 16.
    """

    __slots__ = (
        "ssrc",
        "ssrc_bytes",
        "base_seq",
        "max_seq",
        "cycles",
        "received",
        "jitter",
        "last",
        "last_arrival",
    )

    def __init__(self) -> None:
        self.ssrc = -1
        self.ssrc_bytes = b""
        """The SSRC as it appears in the header, compared per packet."""
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        """Packets accepted from this SSRC, counted by the core."""
        self.jitter = 0.0
        """Interarrival jitter in RTP timestamp units (RFC 3550 A.8)."""
        self.last = b""
        """The last packet accepted, kept unread by the core."""
        self.last_arrival = 0.0

    @property
    def expected(self) -> int:
        self.catch_up()
        if self.ssrc < 0:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost; duplicates can make it negative (§6.4.1)."""
        return self.expected - self.received

    def sample(self, packet: bytes, now: float, rates: tuple[int, ...]) -> None:
        """Read ``packet`` (accepted at ``now``) and the one accepted before it.

        ``rates`` is the clock rate by payload type. The core has counted the
        packet in ``received`` already.
        """
        seq: int
        timestamp: int
        ssrc: int
        seq, timestamp, ssrc = _read_seq_timestamp_ssrc(packet, 2)
        if ssrc != self.ssrc:
            self._restart(ssrc, seq, packet)
        else:
            self._advance(seq)
            self._step_jitter(packet, now, rates, timestamp)
        self.last = packet
        self.last_arrival = now

    def catch_up(self) -> None:
        """Advance the highest sequence number to the last packet accepted."""
        if self.ssrc >= 0:
            self._advance(int.from_bytes(self.last[2:4], "big"))

    def _advance(self, seq: int) -> None:
        # RFC 3550 A.1: count a cycle when the sequence number wraps in order.
        max_seq = self.max_seq
        if 0 < (seq - max_seq) & 0xFFFF < 0x8000:
            if seq < max_seq:
                self.cycles += 0x10000
            self.max_seq = seq

    def _step_jitter(
        self, packet: bytes, now: float, rates: tuple[int, ...], timestamp: int
    ) -> None:
        # A.8 with gain 1/16 on this packet and the previous one; a 32-bit
        # timestamp wrap takes the shorter distance.
        previous = self.last
        _, previous_timestamp, _ = _read_seq_timestamp_ssrc(previous, 2)
        transit = int(now * rates[packet[1] & 0x7F]) - timestamp
        previous_transit = (
            int(self.last_arrival * rates[previous[1] & 0x7F]) - previous_timestamp
        )
        delta = abs(transit - previous_transit)
        if delta > 0x7FFFFFFF:
            delta = abs(delta - 0x100000000)
        self.jitter += (delta - self.jitter) / 16

    def _restart(self, ssrc: int, seq: int, packet: bytes) -> None:
        # A new SSRC restarts the numbering and the estimator (RFC 3550
        # §8.2); the packet that shows it is the first counted.
        self.ssrc, self.ssrc_bytes = ssrc, packet[8:12]
        self.base_seq = self.max_seq = seq
        self.cycles = 0
        self.received = 1
        self.jitter = 0.0


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
