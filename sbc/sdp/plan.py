"""What the rewriter tells the media relay: ports, peers, payload maps, keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .crypto import KeyParams, SrtpSuite


@dataclass(frozen=True, slots=True)
class RelayPorts:
    """The SBC's own RTP and RTCP ports on one leg for one stream."""

    rtp: int
    rtcp: int


@dataclass(frozen=True, slots=True)
class StreamPorts:
    """What ``allocate_ports`` returns for one m= line: a port pair per leg."""

    offerer_side: RelayPorts
    """Ports facing the peer that sent the offer."""
    answerer_side: RelayPorts
    """Ports facing the peer the offer is forwarded to."""


@dataclass(frozen=True, slots=True)
class MediaEndpoint:
    """Where a peer receives one stream's RTP and RTCP."""

    address: str
    rtp_port: int
    rtcp_address: str
    """From a=rtcp when it names one (RFC 3605), else ``address``."""
    rtcp_port: int
    """Equal to ``rtp_port`` when RTP and RTCP are multiplexed (RFC 5761)."""


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """The SDES keys of one leg: the SBC protects with ``send``, checks with ``receive``."""

    suite: SrtpSuite
    send: KeyParams = field(repr=False)
    receive: tuple[KeyParams, ...] = field(repr=False)
    """The peer's keys, several only when told apart by MKI."""


@dataclass(frozen=True, slots=True)
class LegMedia:
    """One leg's side of a stream."""

    local: RelayPorts
    """The SBC's ports on this leg."""
    remote: MediaEndpoint | None
    """The peer's ports; None when the peer must not be sent media (hold)."""
    rtcp_mux: bool
    srtp: SrtpKeys | None
    payload_types: Mapping[str, int]
    """Encoding as in a=rtpmap ("PCMU/8000") -> the type this leg's peer listed."""


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """The negotiated state of one m= line, index for index with the SDP."""

    index: int
    media: str
    direction: str
    """Negotiated direction seen from the offerer: sendonly means offerer to answerer."""
    offerer: LegMedia
    answerer: LegMedia
    to_answerer: Mapping[int, int]
    """Payload type sent by the offerer -> payload type the answerer listed."""
    to_offerer: Mapping[int, int]
    """Payload type sent by the answerer -> payload type the offerer listed."""


@dataclass(frozen=True, slots=True)
class MediaPlan:
    """The relay's instructions after an offer/answer exchange.

    ``streams`` holds only active streams; a rejected or port-0 m= line has
    no entry and its ports (if any were allocated) can be released.
    """

    streams: tuple[StreamPlan, ...]
    rejected: tuple[int, ...]
    """Indexes of m= lines that ended at port 0."""
