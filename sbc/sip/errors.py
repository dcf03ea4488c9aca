"""SIP protocol errors, each carrying the response a UAS sends for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .message import Request


class SipError(Exception):
    """Base of every SIP protocol error.

    ``status_code`` is the response to send and ``reason`` a precise reason
    phrase naming the fault, ready for the status line.
    """

    status_code: int = 500

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if status_code is not None:
            self.status_code = status_code


class BadRequest(SipError):
    """400: the request is malformed (RFC 3261 §21.4.1)."""

    status_code = 400


class UnsupportedUriScheme(SipError):
    """416: the Request-URI scheme is not served (RFC 3261 §21.4.14)."""

    status_code = 416


class BadExtension(SipError):
    """420: a Require or Proxy-Require option tag is not supported.

    The response lists the tags in an Unsupported header (RFC 3261 §8.2.2.3).
    """

    status_code = 420

    def __init__(self, reason: str, *, unsupported: list[str]) -> None:
        super().__init__(reason)
        self.unsupported = unsupported


class TooManyHops(SipError):
    """483: Max-Forwards reached zero (RFC 3261 §16.3 item 3)."""

    status_code = 483


class MethodNotImplemented(SipError):
    """501: the method is not implemented; the response carries Allow."""

    status_code = 501

    def __init__(self, reason: str, *, allow: list[str]) -> None:
        super().__init__(reason)
        self.allow = allow


class VersionNotSupported(SipError):
    """505: the request line names a SIP version other than 2.0."""

    status_code = 505


class MessageTooLarge(SipError):
    """513: the message exceeds the configured size limits."""

    status_code = 513


class SipParseError(SipError):
    """Raised by every parser function, and by nothing else in the parser.

    ``request`` is the partially parsed request when enough of it parsed to
    answer (Via, From, To, Call-ID and CSeq usable); ``is_response`` marks a
    malformed response, which is discarded rather than answered;
    ``stream_unusable`` says the framing of a stream can no longer be
    trusted, so the connection must be closed.
    """

    status_code = 400

    def __init__(
        self,
        reason: str,
        *,
        status_code: int = 400,
        request: Request | None = None,
        is_response: bool = False,
        stream_unusable: bool = False,
    ) -> None:
        super().__init__(reason, status_code=status_code)
        self.request = request
        self.is_response = is_response
        self.stream_unusable = stream_unusable
