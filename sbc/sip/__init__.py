"""SIP messages: model, parser, serializer and stream framer (RFC 3261)."""

from .errors import (
    BadExtension,
    BadRequest,
    MessageTooLarge,
    MethodNotImplemented,
    SipError,
    SipParseError,
    TooManyHops,
    UnsupportedUriScheme,
    VersionNotSupported,
)
from .framing import KeepAlive, StreamFramer
from .headers import (
    STAR,
    Challenge,
    Credentials,
    CSeq,
    MediaType,
    NameAddr,
    RAck,
    SessionExpires,
    Via,
)
from .message import Headers, Request, Response, make_response, reason_phrase
from .parser import parse_message, validate_request, validate_response
from .uri import AbsoluteUri, Params, SipUri, TelUri, Uri, parse_uri

__all__ = [
    "STAR",
    "AbsoluteUri",
    "BadExtension",
    "BadRequest",
    "CSeq",
    "Challenge",
    "Credentials",
    "Headers",
    "KeepAlive",
    "MediaType",
    "MessageTooLarge",
    "MethodNotImplemented",
    "NameAddr",
    "Params",
    "RAck",
    "Request",
    "Response",
    "SessionExpires",
    "SipError",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "TelUri",
    "TooManyHops",
    "UnsupportedUriScheme",
    "Uri",
    "Via",
    "VersionNotSupported",
    "make_response",
    "parse_message",
    "parse_uri",
    "reason_phrase",
    "validate_request",
    "validate_response",
]
