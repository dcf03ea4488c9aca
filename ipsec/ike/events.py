"""Events an IKE_SA engine reports, named in the past tense."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .constants import DhGroup, NotifyType, ProtocolId
from .crypto import EncrAlgorithm, IntegAlgorithm, PrfAlgorithm
from .keymat import ChildSaKeys
from .payloads import IdPayload, TrafficSelector

if TYPE_CHECKING:
    # The engine imports these events; the reference back is for typing only.
    from .ike_sa import IkeSa


@dataclass(frozen=True, slots=True)
class IkeSaEstablished:
    """IKE_AUTH completed: both peers are authenticated."""

    spi_i: bytes
    spi_r: bytes
    encr: EncrAlgorithm
    prf: PrfAlgorithm
    integ: IntegAlgorithm | None
    dh_group: DhGroup
    remote_id: IdPayload
    """The peer's IDi or IDr as it authenticated."""
    local_behind_nat: bool = False
    remote_behind_nat: bool = False
    """NAT detection (RFC 7296 §2.23): either means UDP encapsulation on 4500."""


@dataclass(frozen=True, slots=True)
class ChildSaEstablished:
    """A CHILD_SA pair is ready to install in the data plane.

    SPIs are the values each receiver chose: ``inbound_spi`` is ours (the
    peer sends with it), ``outbound_spi`` the peer's.
    """

    protocol: ProtocolId
    inbound_spi: bytes
    outbound_spi: bytes
    encr: EncrAlgorithm
    integ: IntegAlgorithm | None
    esn: bool
    keys: ChildSaKeys
    """KEYMAT; prints as sizes only."""
    is_initiator: bool
    """True when we initiated the exchange, so our outbound keys are ``*_i``."""
    local_traffic_selectors: tuple[TrafficSelector, ...]
    remote_traffic_selectors: tuple[TrafficSelector, ...]
    rekeyed_spi: bytes | None = None
    """Our inbound SPI of the CHILD_SA this one replaces, None for a new one."""
    outbound_active: bool = True
    """Send on it now; if False, install it inbound and keep sending on the
    old pair until ``ChildSaOutboundSwitched`` (make-before-break, §2.8)."""

    @property
    def outbound_keys(self) -> tuple[bytes, bytes]:
        """(encryption key, integrity key) for traffic we send."""
        if self.is_initiator:
            return self.keys.encryption_key_i, self.keys.integrity_key_i
        return self.keys.encryption_key_r, self.keys.integrity_key_r

    @property
    def inbound_keys(self) -> tuple[bytes, bytes]:
        if self.is_initiator:
            return self.keys.encryption_key_r, self.keys.integrity_key_r
        return self.keys.encryption_key_i, self.keys.integrity_key_i


@dataclass(frozen=True, slots=True)
class ChildSaFailed:
    """The CHILD_SA of an exchange was refused; the IKE_SA may live on."""

    notify_type: NotifyType | int
    reason: str


@dataclass(frozen=True, slots=True)
class IkeSaFailed:
    """The IKE_SA could not be set up, or died; nothing of it is usable."""

    notify_type: NotifyType | int | None
    """The error Notify sent or received, None for a timeout or local error."""
    reason: str


class ChildSaDeleteReason(Enum):
    REKEYED = "rekeyed"
    """Replaced by a new CHILD_SA (RFC 7296 §2.8)."""
    REDUNDANT = "redundant after a rekey collision"
    """Created by the exchange with the lowest nonce (RFC 7296 §2.8.1)."""
    DELETED_LOCALLY = "deleted locally"
    DELETED_BY_PEER = "deleted by the peer"
    IKE_SA_GONE = "its IKE_SA was deleted"
    EXPIRED = "hard lifetime reached"


@dataclass(frozen=True, slots=True)
class ChildSaOutboundSwitched:
    """Send on this CHILD_SA from now on: its peer has dropped the old one."""

    inbound_spi: bytes
    outbound_spi: bytes


@dataclass(frozen=True, slots=True)
class ChildSaDeleted:
    """Remove both SAs of this CHILD_SA pair from the data plane."""

    inbound_spi: bytes
    outbound_spi: bytes
    reason: ChildSaDeleteReason


@dataclass(frozen=True, slots=True)
class ChildSaRekeyFailed:
    """Our rekey was refused; the old CHILD_SA stays in use until deleted."""

    inbound_spi: bytes
    notify_type: NotifyType | int
    reason: str


class IkeSaDeleteReason(Enum):
    DELETED_LOCALLY = "deleted locally"
    DELETED_BY_PEER = "deleted by the peer"
    PEER_DEAD = "no answer from the peer"
    """The retransmissions of a request ran out (RFC 7296 §2.4)."""
    REKEYED = "rekeyed"
    """Replaced by a new IKE_SA that took over its CHILD_SAs (§2.18)."""
    REDUNDANT = "redundant after a rekey collision"
    """Made by the IKE_SA rekey holding the lowest nonce (§2.8.1)."""


@dataclass(frozen=True, slots=True)
class IkeSaDeleted:
    """An established IKE_SA is gone; its CHILD_SAs were reported deleted."""

    spi_i: bytes
    spi_r: bytes
    reason: IkeSaDeleteReason
    restart: bool = False
    """dpd_action restart: the manager should set the IKE_SA up again."""


@dataclass(frozen=True, slots=True)
class IkeSaRekeyFailed:
    """Our IKE_SA rekey was refused; the IKE_SA stays as it is."""

    notify_type: NotifyType | int
    reason: str


@dataclass(frozen=True, slots=True)
class IkeSaCreatedByRekey:
    """A rekey exchange made a new IKE_SA: register it under its SPIs.

    Its datagrams, timers and events are then handled like any engine's. In
    a collision two appear; ``IkeSaRekeyed`` names the one that lives on.
    """

    spi_i: bytes
    spi_r: bytes
    ike_sa: IkeSa


@dataclass(frozen=True, slots=True)
class IkeSaRekeyed:
    """The CHILD_SAs moved from the IKE_SA (spi_i, spi_r) to the new one."""

    spi_i: bytes
    spi_r: bytes
    new_spi_i: bytes
    new_spi_r: bytes


@dataclass(frozen=True, slots=True)
class InitialContactReceived:
    """The peer has no other IKE_SA with us (RFC 7296 §2.4): the manager
    should delete any older IKE_SA authenticated as ``remote_id``."""

    spi_i: bytes
    spi_r: bytes
    remote_id: IdPayload


IkeEvent = (
    IkeSaEstablished
    | ChildSaEstablished
    | ChildSaFailed
    | IkeSaFailed
    | ChildSaOutboundSwitched
    | ChildSaDeleted
    | ChildSaRekeyFailed
    | IkeSaDeleted
    | InitialContactReceived
    | IkeSaRekeyFailed
    | IkeSaCreatedByRekey
    | IkeSaRekeyed
)
