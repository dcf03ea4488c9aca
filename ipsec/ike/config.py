"""Configuration of one IKE_SA peer, as plain typed values."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .certificates import CertificateAuthentication
from .constants import IdType
from .keymat import PresharedKey
from .payloads import IdiPayload, IdPayload, IdrPayload, Proposal, TrafficSelector


class DpdAction(Enum):
    """What to do with an IKE_SA whose peer stopped answering."""

    CLEAR = "clear"
    RESTART = "restart"


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
    psk: PresharedKey | None
    """Authenticates both sides unless ``certificates`` says otherwise."""
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
    """Retries after INVALID_KE_PAYLOAD (RFC 7296 §1.2, §1.3, case C23)."""
    child_rekey_time: float | None = None
    """Soft lifetime of a CHILD_SA in seconds; None rekeys only on request
    (strongSwan's default is 3600)."""
    child_life_time: float | None = None
    """Hard lifetime of a CHILD_SA: deleted at this age if not yet replaced
    (strongSwan: rekey_time plus 10 %). Keep it above child_rekey_time."""
    ike_rekey_time: float | None = None
    """Soft lifetime of the IKE_SA in seconds (strongSwan: 14400)."""
    rand_time: float = 0.0
    """Each rekey comes up to this many seconds early, drawn from the injected
    randomness, so that two peers with one configuration rarely collide."""
    dpd_delay: float | None = None
    """Send a liveness check after this long without hearing from the peer."""
    dpd_action: DpdAction = DpdAction.CLEAR
    send_initial_contact: bool = True
    """Put INITIAL_CONTACT in our IKE_AUTH request (RFC 7296 §2.4)."""
    fragmentation: bool = True
    """Offer IKE fragmentation (RFC 7383) and use it once agreed."""
    fragment_size: int | None = None
    """Largest IP datagram an IKE fragment may fill; None: 576 over IPv4,
    1280 over IPv6 (RFC 7383 §2.5.1)."""
    certificates: CertificateAuthentication | None = None
    """With a local certificate we sign our AUTH; with trust anchors the peer
    must sign its own. The PSK covers whichever side this leaves out."""

    def __post_init__(self) -> None:
        # Caught here rather than as a failure half-way through IKE_AUTH.
        certificates = self.certificates
        signs = certificates is not None and certificates.local is not None
        checks = certificates is not None and certificates.requires_peer_certificate
        if self.psk is None and not (signs and checks):
            raise ValueError("without a PSK, a certificate and CAs are both needed")
        if self.fragment_size is not None and self.fragment_size < 160:
            raise ValueError("fragment_size below 160 leaves no room for content")
