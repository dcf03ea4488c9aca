"""SDP errors, each carrying the SIP response a UAS sends for it."""

from __future__ import annotations


class SdpError(Exception):
    """Base of every SDP error.

    ``status_code`` is the SIP response the B2BUA sends for the body that
    raised it; ``reason`` names the fault precisely and never holds key bytes.
    """

    status_code: int = 488

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SdpSyntaxError(SdpError):
    """400: the body is not well-formed SDP (RFC 8866 §5, §9).

    A body that does not parse is a malformed request, not a session the
    SBC dislikes (RFC 3261 §21.4.1).
    """

    status_code = 400


class NotAcceptableHere(SdpError):
    """488: the session is well-formed but cannot be served (RFC 3261 §21.4.26)."""

    status_code = 488


class NoCommonCodec(NotAcceptableHere):
    """488: the codec allow-list left no active stream in the offer."""


class UnusableCrypto(NotAcceptableHere):
    """488: no offered a=crypto line is usable (RFC 4568 §7.1.2)."""


class AnswerMismatch(NotAcceptableHere):
    """488: an answer does not fit its offer (RFC 3264 §6, RFC 4568 §7.1.3).

    The answer arrives in a response, so the B2BUA cannot send 488 for it;
    it ends the call leg instead, and the code is what the other leg hears.
    """
