"""IPsec profiles that protect trunks, and the mesh of peer SBC nodes.

Same conventions as the rest of the model (frozen, no extra fields, objects
named and referring to each other by name, secrets typed ``Secret`` so that
stores seal them and dumps redact them). Algorithm names are strongSwan's keywords, which
operators already know; the IKE engine maps them to RFC 7296 transform IDs.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from .types import IPAddressField, IPNetworkField, Name, Secret, Text

IkeEncryption = Literal[
    "aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128", "aes256"
]
EspEncryption = Literal[
    "aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128", "aes256", "null"
]
Integrity = Literal["sha256", "sha384", "sha512"]
Prf = Literal["prfsha256", "prfsha384", "prfsha512"]
DhGroup = Literal[
    "ecp256", "ecp384", "ecp521", "curve25519", "modp2048", "modp3072", "modp4096"
]
IdentityType = Literal["fqdn", "email", "ipv4", "ipv6", "dn", "key_id"]
"""RFC 7296 §3.5 ID types: ID_FQDN, ID_RFC822_ADDR, ID_IPV4_ADDR, ..."""

_AEAD = {"aes128gcm16", "aes256gcm16", "chacha20poly1305"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _integrity_fits(encryption: str, integrity: str | None) -> None:
    # RFC 7296 §3.3.3 and RFC 4303 §3.2: an AEAD carries its own ICV, any
    # other cipher needs an integrity transform.
    if encryption in _AEAD and integrity is not None:
        raise PydanticCustomError("proposal", "an AEAD cipher takes no integrity")
    if encryption not in _AEAD and integrity is None:
        raise PydanticCustomError("proposal", f"{encryption} needs an integrity")


class IkeProposal(_Model):
    """One IKE_SA proposal (RFC 7296 §3.3)."""

    encryption: IkeEncryption
    integrity: Integrity | None = None
    prf: Prf = "prfsha256"
    dh: DhGroup = "ecp256"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _integrity_fits(self.encryption, self.integrity)
        return self


class EspProposal(_Model):
    """One CHILD_SA proposal for ESP (RFC 7296 §3.3, RFC 4303)."""

    encryption: EspEncryption
    integrity: Integrity | None = None
    esn: bool = True
    """Extended sequence numbers (RFC 4303 §2.2.1)."""
    dh: DhGroup | None = None
    """Group for PFS on CHILD_SA rekeys; None: no PFS."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.encryption == "null" and self.integrity is None:
            raise PydanticCustomError("proposal", "null encryption needs integrity")
        if self.encryption != "null":
            _integrity_fits(self.encryption, self.integrity)
        return self


class Lifetimes(_Model):
    ike_seconds: int = Field(default=14400, ge=300, le=86400)
    """IKE_SA rekey interval."""
    child_seconds: int = Field(default=3600, ge=60, le=86400)
    """CHILD_SA rekey interval."""
    child_bytes: int | None = Field(default=None, ge=1)
    """CHILD_SA rekey volume; None: by time only."""


class Dpd(_Model):
    """Dead peer detection (RFC 7296 §2.4)."""

    delay: int = Field(default=30, ge=1, le=3600)
    """Seconds of silence before an INFORMATIONAL liveness check."""
    action: Literal["clear", "restart"] = "restart"


class IpsecProfile(_Model):
    """How a mesh peer is protected: proposals, authentication, mode, timers."""

    name: Name
    ike_proposals: list[IkeProposal] = Field(min_length=1)
    esp_proposals: list[EspProposal] = Field(min_length=1)
    auth: Literal["psk", "certificate"]
    psk: Secret | None = None
    """Pre-shared key (auth psk); sealed at rest, never returned."""
    certificate: Text | None = None
    """PEM certificate chain of this node (auth certificate)."""
    private_key: Secret | None = None
    """PEM private key of ``certificate``; sealed at rest, never returned."""
    ca_certificates: list[Text] = Field(default_factory=list)
    """PEM trust anchors for the peers' certificates."""
    mode: Literal["tunnel", "transport"] = "transport"
    lifetimes: Lifetimes = Field(default_factory=Lifetimes)
    dpd: Dpd | None = Field(default_factory=Dpd)
    inner_addresses: list[IPNetworkField] = Field(default_factory=list)
    """Tunnel mode: the inner networks (traffic selectors) of this node."""

    @model_validator(mode="after")
    def _auth_fields(self) -> Self:
        if self.auth == "psk":
            if self.psk is None:
                raise PydanticCustomError("auth", "auth psk needs psk")
            if self.certificate or self.private_key or self.ca_certificates:
                raise PydanticCustomError(
                    "auth", "certificates belong to auth certificate"
                )
        elif self.certificate is None or self.private_key is None:
            raise PydanticCustomError(
                "auth", "auth certificate needs certificate and private_key"
            )
        elif self.psk is not None:
            raise PydanticCustomError("auth", "psk belongs to auth psk")
        if self.mode == "transport" and self.inner_addresses:
            raise PydanticCustomError("mode", "inner_addresses need tunnel mode")
        return self


class MeshPeer(_Model):
    """Another SBC node reached over IPsec."""

    name: Name
    address: IPAddressField
    """The peer's outer (IKE) address."""
    identity_type: IdentityType = "fqdn"
    identity: Text
    """The IDr/IDi value the peer must present (RFC 7296 §3.5)."""
    profile: Name
    """The IPsec profile protecting traffic with this peer."""
