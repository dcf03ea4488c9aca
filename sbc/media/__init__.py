"""RTP/RTCP media relay with SRTP interworking; see docs/media.md."""

from sbc.media.core import RemoteMedia, SessionCore, Side, StreamCore
from sbc.media.counters import MediaDropReason, StreamCounters
from sbc.media.errors import BadSrtpParameters, MediaError, PortsExhausted, UnknownLeg
from sbc.media.events import MediaEvent, MediaTimedOut
from sbc.media.relay import LocalMedia, MediaRelay, MediaSession
from sbc.media.settings import MediaSettings
from sbc.media.srtp import SrtpParameters, SrtpSuite

__all__ = [
    "BadSrtpParameters",
    "LocalMedia",
    "MediaDropReason",
    "MediaError",
    "MediaEvent",
    "MediaRelay",
    "MediaSession",
    "MediaSettings",
    "MediaTimedOut",
    "PortsExhausted",
    "RemoteMedia",
    "SessionCore",
    "Side",
    "SrtpParameters",
    "SrtpSuite",
    "StreamCore",
    "StreamCounters",
    "UnknownLeg",
]
