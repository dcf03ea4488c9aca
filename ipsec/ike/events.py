"""Events an IKE_SA engine reports, named in the past tense."""

from __future__ import annotations

from dataclasses import dataclass

from .constants import DhGroup, NotifyType, ProtocolId
from .crypto import EncrAlgorithm, IntegAlgorithm, PrfAlgorithm
from .keymat import ChildSaKeys
from .payloads import IdPayload, TrafficSelector


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


IkeEvent = IkeSaEstablished | ChildSaEstablished | ChildSaFailed | IkeSaFailed
