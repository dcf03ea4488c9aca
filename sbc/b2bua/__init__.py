"""The back-to-back user agent: the SBC's call engine (sans-IO)."""

from .call import Call, CallPhase, Leg, Side
from .engine import ALLOW, SUPPORTED, B2bua, glare_retry_delay
from .session_timer import SessionTimer, SessionTimerPolicy
from .settings import (
    B2buaSettings,
    BodyHook,
    CallRecordWriter,
    LocalEndpoint,
    PassThroughBodies,
    RandomSource,
)

__all__ = [
    "ALLOW",
    "SUPPORTED",
    "B2bua",
    "B2buaSettings",
    "BodyHook",
    "Call",
    "CallPhase",
    "CallRecordWriter",
    "Leg",
    "LocalEndpoint",
    "PassThroughBodies",
    "RandomSource",
    "SessionTimer",
    "SessionTimerPolicy",
    "Side",
    "glare_retry_delay",
]
