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
from .keylog import EspKeyLog, write_esp_sa
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
from .sad import SADatabase
from .spd import (
    DEFAULT_POLICY,
    Direction,
    Policy,
    PolicyAction,
    SecurityPolicyDatabase,
    TrafficSelector,
)

__all__ = [
    "DEFAULT_POLICY",
    "Direction",
    "Drop",
    "DropReason",
    "Encryption",
    "EspKeyLog",
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
    "Policy",
    "PolicyAction",
    "Protocol",
    "ReplayWindow",
    "SACounters",
    "SAConfig",
    "SADatabase",
    "SAExpired",
    "SecurityPolicyDatabase",
    "SoftLifetimeReached",
    "TrafficSelector",
    "Unprotected",
    "write_esp_sa",
]
