"""Configuration of one IKE_SA peer, as plain typed values."""

from __future__ import annotations

from dataclasses import dataclass

from .constants import IdType
from .keymat import PresharedKey
from .payloads import IdiPayload, IdPayload, IdrPayload, Proposal, TrafficSelector


@dataclass(frozen=True, slots=True)
class Identity:
    """An IKE identity (RFC 7296 §3.5), e.g. ID_FQDN b"sbc.example.com"."""

    id_type: IdType
    data: bytes

    def as_idi(self) -> IdiPayload:
        return IdiPayload(self.id_type, self.data)

    def as_idr(self) -> IdrPayload:
        return IdrPayload(self.id_type, self.data)

    def matches(self, payload: IdPayload) -> bool:
        return payload.id_type == self.id_type and payload.data == self.data


@dataclass(frozen=True, slots=True)
class IkeSaConfig:
    local_id: Identity
    remote_id: Identity
    """Who the peer must authenticate as; anyone else gets AUTHENTICATION_FAILED."""
    psk: PresharedKey
    ike_proposals: tuple[Proposal, ...]
    """IKE proposals in our order of preference (SPI left empty)."""
    esp_proposals: tuple[Proposal, ...]
    """ESP proposals for the first CHILD_SA; the SPI is allocated per exchange."""
    local_traffic_selectors: tuple[TrafficSelector, ...]
    remote_traffic_selectors: tuple[TrafficSelector, ...]
    retransmit_timeout: float = 4.0
    """First retransmission after this many seconds (strongSwan's default)."""
    retransmit_base: float = 1.8
    """Each further retransmission waits this factor longer."""
    retransmit_tries: int = 5
    max_invalid_ke_retries: int = 2
    """IKE_SA_INIT retries after INVALID_KE_PAYLOAD (RFC 7296 §1.2, case C23)."""
