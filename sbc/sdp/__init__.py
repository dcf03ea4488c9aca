"""SDP (RFC 8866) and offer/answer rewriting that anchors media at the SBC."""

from .anchor import (
    RTP_PROFILES,
    TRANSPORT_ATTRIBUTES,
    AllocatePorts,
    PendingOffer,
    anchor_answer,
    anchor_offer,
)
from .codecs import STATIC_PAYLOAD_TYPES, Codec, codec_table, parse_rtpmap
from .crypto import SRTP_SUITES, CryptoAttribute, InvalidCrypto, KeyParams, Mki
from .errors import (
    AnswerMismatch,
    NoCommonCodec,
    NotAcceptableHere,
    SdpError,
    SdpSyntaxError,
    UnusableCrypto,
)
from .leg import Leg, LegPolicy, RandomBytes
from .model import Connection, MediaDescription, Origin, SessionDescription
from .plan import (
    LegMedia,
    MediaEndpoint,
    MediaPlan,
    RelayPorts,
    SrtpKeys,
    StreamPlan,
    StreamPorts,
)

__all__ = [
    "RTP_PROFILES",
    "SRTP_SUITES",
    "STATIC_PAYLOAD_TYPES",
    "TRANSPORT_ATTRIBUTES",
    "AllocatePorts",
    "AnswerMismatch",
    "Codec",
    "Connection",
    "CryptoAttribute",
    "InvalidCrypto",
    "KeyParams",
    "Leg",
    "LegMedia",
    "LegPolicy",
    "MediaDescription",
    "MediaEndpoint",
    "MediaPlan",
    "Mki",
    "NoCommonCodec",
    "NotAcceptableHere",
    "Origin",
    "PendingOffer",
    "RandomBytes",
    "RelayPorts",
    "SdpError",
    "SdpSyntaxError",
    "SessionDescription",
    "SrtpKeys",
    "StreamPlan",
    "StreamPorts",
    "UnusableCrypto",
    "anchor_answer",
    "anchor_offer",
    "codec_table",
    "parse_rtpmap",
]
