"""Errors of the media relay API (packets are never raised, only counted)."""

from __future__ import annotations


class MediaError(Exception):
    """Base of the errors the relay API raises to its caller."""


class PortsExhausted(MediaError):
    """No RTP/RTCP pair could be bound in the configured range; a B2BUA
    answers the call with 503 (RFC 3261 §21.5.4)."""

    sip_status = 503


class UnknownLeg(MediaError):
    """A stream index or leg the session does not have."""

    sip_status = 500


class BadSrtpParameters(MediaError):
    """An SRTP suite or key the relay cannot use; the offer is refused with
    488 Not Acceptable Here (RFC 4568 §7.1.3 leaves the stream unusable)."""

    sip_status = 488
