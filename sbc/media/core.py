"""The sans-IO core of the relay: latching, transforms, counters, timeouts.

A stream joins two legs, A (toward the caller) and B (toward the callee).
What arrives on a leg's ports from its peer goes out of the other leg's
ports to that leg's peer. The core receives bytes, the source address and the
time; it returns what to send and where, and never touches a socket or clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from sbc.media.counters import SAMPLE_EVERY, MediaDropReason, StreamCounters
from sbc.media.events import MediaTimedOut
from sbc.media.rtcp import read_reports
from sbc.media.rtp import (
    DEFAULT_CLOCK_RATE,
    RTCP_HEADER_SIZE,
    RTP_HEADER_SIZE,
    PayloadTypeMap,
    Translation,
    clock_rate_table,
    clock_rates,
    is_rtcp_on_rtp_port,
    payload_type_translation,
    rewrite_payload_type,
)
from sbc.media.srtp import SrtpContext, SrtpParameters

MEDIA_LOGGER = "sbc.media"
_log = logging.getLogger(MEDIA_LOGGER)

Address = tuple[str, int]

RTP_SOCKET = 0
RTCP_SOCKET = 1

Forward = tuple[bytes, Address, int]
"""(datagram, destination, RTP_SOCKET or RTCP_SOCKET of the other leg)."""

_UNSAMPLED = SAMPLE_EVERY - 1
"""Mask of the received count: non-zero for the packets kept unread."""

_UNSPECIFIED = frozenset({"0.0.0.0", "::"})

_DEFAULT_RATES = clock_rate_table({})

_SHORT = MediaDropReason.SHORT
_BAD_VERSION = MediaDropReason.BAD_VERSION
_WRONG_SOURCE = MediaDropReason.WRONG_SOURCE
_NO_DESTINATION = MediaDropReason.NO_DESTINATION
_UNPROTECT = MediaDropReason.SRTP_UNPROTECT_FAILED
_PROTECT = MediaDropReason.SRTP_PROTECT_FAILED


class Side(IntEnum):
    """The two legs of a call's media."""

    A = 0
    """Toward the caller (the A-leg of the B2BUA)."""
    B = 1
    """Toward the callee (the B-leg)."""


@dataclass(frozen=True, slots=True)
class RemoteMedia:
    """What an offer/answer says about one leg's peer for one m-line."""

    host: str
    """Connection address (c=), an IPv4 or IPv6 literal."""
    rtp_port: int
    """Port of the m-line."""
    rtcp_port: int | None = None
    """a=rtcp port (RFC 3605); None means rtp_port + 1."""
    rtcp_mux: bool = False
    """Both sides agreed on a=rtcp-mux (RFC 5761 §5.1.1)."""
    srtp: SrtpParameters | None = field(default=None, repr=False)
    """Keys from a=crypto when the m-line is RTP/SAVP; None for plain RTP."""
    payload_types: PayloadTypeMap = field(default_factory=dict)
    """Encoding -> payload type this peer listed (``"PCMU/8000": 0``)."""
    latch_any_source: bool | None = None
    """Override of the relay's or trunk's NAT setting; None keeps it."""


class Latch:
    """Symmetric RTP: whom to accept packets from and whom to send to.

    The relay accepts the first packet from the signalled address and sends
    back to its source; with ``any_source`` the first packet from anywhere
    wins (a peer behind NAT). After a re-INVITE moves the peer, the old
    source stays accepted until the new one is heard, so nothing in flight
    is lost.
    """

    __slots__ = ("signalled", "source", "destination", "any_source", "pending")

    def __init__(self, any_source: bool) -> None:
        self.signalled: Address | None = None
        self.source: tuple[Any, ...] | None = None
        self.destination: Address | None = None
        self.any_source = any_source
        self.pending = True

    def signal(self, address: Address, any_source: bool) -> None:
        """A new offer or answer; send there at once, relatch when heard."""
        self.any_source = any_source
        if address == self.signalled and not self.pending:
            return
        if address[0] in _UNSPECIFIED or address[1] == 0:
            # Hold with c=0.0.0.0 (RFC 3264 §8.4) or a disabled stream (port
            # 0, §6): send nothing, but keep hearing the latched peer.
            self.signalled = address
            self.destination = None
            return
        self.signalled = address
        self.pending = True
        # Behind NAT the signalled address is private: keep answering the
        # binding already heard until a packet shows a new one.
        if self.any_source and self.source is not None:
            self.destination = (self.source[0], self.source[1])
        else:
            self.destination = address

    def accepts(self, source: Any) -> bool:
        """True if a packet from ``source`` may pass; latches as a side effect."""
        # The socket reports one address shape per family (IPv6 adds flow
        # info and scope), so the latched tuple compares whole, in C.
        if source == self.source:
            return True
        if not self.pending:
            return False
        signalled = self.signalled
        if not self.any_source and (
            signalled is None or source[0] != signalled[0] or source[1] != signalled[1]
        ):
            return False
        self.source = source
        self.destination = (source[0], source[1])
        self.pending = False
        return True


class Leg:
    """One side of one stream: its peer, its keys, its payload numbering.

    What arrives on the leg's ports from its peer is relayed here toward the
    other leg (``peer``). A relayed packet reads its own leg and the peer leg
    only: the latch, counters, statistics, the clock rate per payload type
    and the renumbering toward the peer all hang off these slots.
    """

    __slots__ = (
        "side",
        "rtp",
        "rtcp",
        "rtcp_mux",
        "srtp",
        "payload_types",
        "counters",
        "statistics",
        "rates",
        "rate_by_type",
        "peer",
        "translation",
        "last_rtp",
        "plain_in",
        "plain_out",
    )

    def __init__(self, side: Side, latch_any_source: bool, now: float) -> None:
        self.side = side
        self.rtp = Latch(latch_any_source)
        self.rtcp = Latch(latch_any_source)
        self.rtcp_mux = False
        self.srtp: SrtpContext | None = None
        self.payload_types: PayloadTypeMap = {}
        self.counters = StreamCounters()
        self.statistics = self.counters.statistics
        self.rates: dict[int, int] = {}
        self.rate_by_type = _DEFAULT_RATES
        """RTP clock rate indexed by payload type (0..127)."""
        self.peer = self
        """The other leg of the stream; StreamCore links the two."""
        self.translation: Translation | None = None
        """Renumbers packets sent toward this leg; None when both legs agree."""
        self.last_rtp = now
        """When this leg's peer last sent RTP that was accepted."""
        self.plain_in = True
        """What arrives is plain RTP alone: no SRTP, no RTCP muxed in."""
        self.plain_out = True
        """What is sent here goes as it came: no SRTP, no renumbering."""

    @property
    def remote_known(self) -> bool:
        return self.rtp.destination is not None

    def update(self, remote: RemoteMedia, default_any_source: bool) -> None:
        any_source = (
            default_any_source
            if remote.latch_any_source is None
            else remote.latch_any_source
        )
        self.rtp.signal((remote.host, remote.rtp_port), any_source)
        if remote.rtcp_mux:
            self.rtcp.signal((remote.host, remote.rtp_port), any_source)
        else:
            rtcp_port = remote.rtcp_port or remote.rtp_port + 1
            self.rtcp.signal((remote.host, rtcp_port), any_source)
        self.rtcp_mux = remote.rtcp_mux

        # Same keys keep the same context, so the rollover counter survives a
        # re-INVITE (RFC 3711 §3.3.1); new keys start a new cryptographic context.
        if remote.srtp is None:
            self.srtp = None
        elif self.srtp is None or self.srtp.parameters != remote.srtp:
            self.srtp = SrtpContext(remote.srtp)
        self.payload_types = dict(remote.payload_types)
        self.rates = clock_rates(remote.payload_types)
        self.rate_by_type = clock_rate_table(self.rates)
        self.counters.clock_rate = next(iter(self.rates.values()), DEFAULT_CLOCK_RATE)

    def rtp_received(self, packet: bytes, source: Any, now: float) -> Forward | None:
        """A datagram on this leg's RTP port; what to send, or None if dropped."""
        # The per-packet path is this one function: plain RTP with a sound
        # header from the latched source passes the first test and runs
        # straight through. Anything else (latching, short, bad version,
        # muxed RTCP, SRTP) is sorted out first, in protocol order.
        if (
            source != self.rtp.source
            or not self.plain_in
            or len(packet) < RTP_HEADER_SIZE
            or packet[0] & 0xC0 != 0x80
        ):
            if self._is_muxed_rtcp(packet):
                return self.rtcp_received(packet, source, now)
            admitted = self._admit_rtp(packet, source)
            if admitted is None:
                return None
            packet = admitted

        size = len(packet)
        counters = self.counters
        counters.packets_received += 1
        counters.bytes_received += size
        self.last_rtp = now

        # RFC 3550 statistics, read lazily (ReceiveStatistics): most packets
        # are counted and kept; one in SAMPLE_EVERY, and any whose SSRC
        # changed, has its header read.
        statistics = self.statistics
        statistics.received += 1
        if statistics.received & _UNSAMPLED and packet[8:12] == statistics.ssrc_bytes:
            statistics.last = packet
            statistics.last_arrival = now
        else:
            statistics.sample(packet, now, self.rate_by_type)

        out = self.peer
        destination = out.rtp.destination
        if destination is None:
            return _drop(out, _NO_DESTINATION)
        if not out.plain_out:
            transformed = _rtp_toward(out, packet)
            if transformed is None:
                return _drop(out, _PROTECT)
            packet = transformed
            size = len(packet)
        counters = out.counters
        counters.packets_sent += 1
        counters.bytes_sent += size
        return packet, destination, RTP_SOCKET

    def rtcp_received(self, packet: bytes, source: Any, now: float) -> Forward | None:
        """A datagram on this leg's RTCP port (or muxed on its RTP port)."""
        if len(packet) < RTCP_HEADER_SIZE:
            return _drop(self, _SHORT)
        if packet[0] >> 6 != 2:
            return _drop(self, _BAD_VERSION)
        if not self.rtcp.accepts(source):
            return _drop(self, _WRONG_SOURCE)
        if self.srtp is not None:
            plain = self.srtp.unprotect_rtcp(packet)
            if plain is None:
                return _drop(self, _UNPROTECT)
            packet = plain

        self.counters.rtcp_received += 1
        _read_receiver_reports(self, packet)
        return _rtcp_toward(self.peer, packet)

    def _is_muxed_rtcp(self, packet: bytes) -> bool:
        # RFC 5761 §4: with rtcp-mux, RTCP shares the RTP port.
        return (
            self.rtcp_mux
            and len(packet) >= RTP_HEADER_SIZE
            and packet[0] >> 6 == 2
            and is_rtcp_on_rtp_port(packet[1])
        )

    def _admit_rtp(self, packet: bytes, source: Any) -> bytes | None:
        """The plain RTP packet to relay, or None once its drop is counted."""
        if len(packet) < RTP_HEADER_SIZE:
            reason = _SHORT
        elif packet[0] >> 6 != 2:
            reason = _BAD_VERSION
        elif not self.rtp.accepts(source):
            reason = _WRONG_SOURCE
        elif self.srtp is None:
            return packet
        else:
            plain = self.srtp.unprotect(packet)
            if plain is not None:
                return plain
            reason = _UNPROTECT
        self.counters.drops[reason] += 1
        return None


class StreamCore:
    """One m-line of a call: two legs and the relay rules between them."""

    __slots__ = ("legs", "_latch_any_source")

    def __init__(self, now: float, latch_any_source: bool = False) -> None:
        self._latch_any_source = latch_any_source
        a = Leg(Side.A, latch_any_source, now)
        b = Leg(Side.B, latch_any_source, now)
        a.peer, b.peer = b, a
        self.legs = (a, b)

    @property
    def last_rtp(self) -> float:
        """When either leg's peer last sent RTP that was accepted."""
        a, b = self.legs
        return max(a.last_rtp, b.last_rtp)

    def restart_clock(self, now: float) -> None:
        for leg in self.legs:
            leg.last_rtp = max(leg.last_rtp, now)

    def update_leg(self, side: Side, remote: RemoteMedia) -> None:
        """Apply a completed offer/answer for one leg (initial or re-INVITE)."""
        self.legs[side].update(remote, self._latch_any_source)
        a, b = self.legs
        b.translation = payload_type_translation(a.payload_types, b.payload_types)
        a.translation = payload_type_translation(b.payload_types, a.payload_types)
        for leg in self.legs:
            leg.plain_in = not leg.rtcp_mux and leg.srtp is None
            leg.plain_out = leg.translation is None and leg.srtp is None
        _log.debug("media: leg %s now %s", side.name, remote)

    def rtp_received(
        self, side: int, packet: bytes, source: Any, now: float
    ) -> Forward | None:
        """A datagram on ``side``'s RTP port; what to send, or None if dropped."""
        return self.legs[side].rtp_received(packet, source, now)

    def rtcp_received(
        self, side: int, packet: bytes, source: Any, now: float
    ) -> Forward | None:
        """A datagram on ``side``'s RTCP port (or muxed on its RTP port)."""
        return self.legs[side].rtcp_received(packet, source, now)

    def timed_out(self, now: float, timeout: float) -> bool:
        return now - self.last_rtp >= timeout


class SessionCore:
    """All streams of one call and its media timeout."""

    __slots__ = ("call_id", "streams", "media_timeout", "_reported")

    def __init__(
        self,
        call_id: str,
        stream_count: int,
        now: float,
        media_timeout: float,
        latch_any_source: bool = False,
    ) -> None:
        self.call_id = call_id
        self.streams = [StreamCore(now, latch_any_source) for _ in range(stream_count)]
        self.media_timeout: float | None = media_timeout
        self._reported = False

    def poll_timeout(self, now: float) -> MediaTimedOut | None:
        """MediaTimedOut once, when no stream carried RTP for media_timeout."""
        timeout = self.media_timeout
        if self._reported or timeout is None:
            return None
        last = max(stream.last_rtp for stream in self.streams)
        if now - last < timeout:
            return None
        self._reported = True
        return MediaTimedOut(call_id=self.call_id, idle_for=now - last)

    def set_media_timeout(self, timeout: float | None, now: float) -> None:
        """Change the limit (None: never, e.g. on hold); the clock restarts."""
        self.media_timeout = timeout
        self._reported = False
        for stream in self.streams:
            stream.restart_clock(now)


def _drop(leg: Leg, reason: MediaDropReason) -> Forward | None:
    leg.counters.drops[reason] += 1
    return None


def _rtp_toward(out: Leg, packet: bytes) -> bytes | None:
    """The packet renumbered and protected for ``out``; None if SRTP failed."""
    if out.translation is not None:
        packet = rewrite_payload_type(packet, out.translation)
    if out.srtp is not None:
        return out.srtp.protect(packet)
    return packet


def _rtcp_toward(out: Leg, packet: bytes) -> Forward | None:
    latch = out.rtp if out.rtcp_mux else out.rtcp
    destination = latch.destination
    if destination is None:
        return _drop(out, _NO_DESTINATION)
    if out.srtp is not None:
        protected = out.srtp.protect_rtcp(packet)
        if protected is None:
            return _drop(out, _PROTECT)
        packet = protected
    out.counters.rtcp_sent += 1
    return packet, destination, RTP_SOCKET if out.rtcp_mux else RTCP_SOCKET


def _read_receiver_reports(leg: Leg, packet: bytes) -> None:
    # The peer's report blocks describe the media we relay to it.
    reports = read_reports(packet)
    if not reports:
        return
    last = reports[-1]
    counters = leg.counters
    counters.reported_fraction_lost = last.fraction_lost
    counters.reported_packets_lost = last.packets_lost
    counters.reported_jitter = 1000.0 * last.jitter / counters.clock_rate
