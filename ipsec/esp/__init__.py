"""Sans-IO ESP (RFC 4303) and AH (RFC 4302) engine.

Nothing here does I/O or reads the clock: packets and ``now`` go in, packets
and typed results come out. The asyncio data paths live in ipsec.dataplane.
"""

from .algorithms import Encryption, Integrity
from .config import Lifetime, Mode, Protocol, SAConfig
from .events import (
    HardLifetimeReached,
    LifetimeEvent,
    LifetimeKind,
    SoftLifetimeReached,
)
from .lifetime import SACounters
from .replay import ReplayWindow
from .results import (
    Drop,
    DropReason,
    MalformedPacket,
    Opened,
    SAExpired,
    Unprotected,
)
from .sa import InboundSA, OutboundSA

__all__ = [
    "Drop",
    "DropReason",
    "Encryption",
    "HardLifetimeReached",
    "InboundSA",
    "Integrity",
    "Lifetime",
    "LifetimeEvent",
    "LifetimeKind",
    "MalformedPacket",
    "Mode",
    "Opened",
    "OutboundSA",
    "Protocol",
    "ReplayWindow",
    "SACounters",
    "SAConfig",
    "SAExpired",
    "SoftLifetimeReached",
    "Unprotected",
]
