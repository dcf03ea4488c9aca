"""IPsec profiles that protect trunks, this node's IKE end, and the mesh.

Same conventions as the rest of the model (frozen, no extra fields, objects
named and referring to each other by name, secrets typed ``Secret`` so that
stores seal them and dumps redact them). Algorithm names are strongSwan's
keywords, which operators already know; :mod:`sbc.secure.derive` maps them
to RFC 7296 transform IDs.

A profile says *how* to protect (proposals, authentication, mode, timers)
and is shared; *whom* (the peer's IKE address, identity and inner networks)
belongs to each trunk or mesh peer, so one profile serves a whole mesh.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Self

from cryptography import x509
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from .types import NOT_BOOL, IPAddressField, IPNetworkField, Name, Secret, Text

Port = Annotated[int, NOT_BOOL, Field(ge=0, le=65535)]


def _check_pem(value: object) -> str:
    # PEM spans lines, which Text refuses; only its armour is checked here,
    # the IKE layer parses the contents when the profile is used.
    if not isinstance(value, str) or "-----BEGIN " not in value:
        raise PydanticCustomError("pem", "must be PEM text (-----BEGIN ...)")
    return value


Pem = Annotated[str, BeforeValidator(_check_pem)]

IkeEncryption = Literal[
    "aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128", "aes256"
]
EspEncryption = Literal[
    "aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128", "aes256"
]
"""No ``null``: a protected trunk carries nothing in clear."""
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
        _integrity_fits(self.encryption, self.integrity)
        return self


class Lifetimes(_Model):
    ike_seconds: int = Field(default=14400, ge=300, le=86400)
    """IKE_SA rekey interval (strongSwan's default)."""
    child_seconds: int = Field(default=3600, ge=60, le=86400)
    """CHILD_SA rekey interval (strongSwan's default). Rekeys come up to a
    tenth of it early, at random, so that two peers rarely collide."""


class Dpd(_Model):
    """Dead peer detection (RFC 7296 §2.4)."""

    delay: int = Field(default=30, ge=1, le=3600)
    """Seconds of silence before an INFORMATIONAL liveness check."""
    action: Literal["clear", "restart"] = "restart"
    """clear: remove the dead peer's SAs; restart: also initiate again."""


class Retransmission(_Model):
    """How long an IKE request waits for its answer (strongSwan's
    ``retransmit_timeout`` and ``retransmit_tries``, base 1.8).

    A dead peer is declared after ``dpd.delay`` plus the whole schedule:
    30 + 4 x (1 + 1.8 + ... + 1.8^5) = about 165 s with the defaults.
    """

    timeout: float = Field(default=4.0, gt=0, le=60)
    """Seconds before the first retransmission; each next waits 1.8x longer."""
    tries: int = Field(default=5, ge=1, le=10)
    """Retransmissions before the request (and the IKE_SA) is given up."""


def _default_ike_proposals() -> list[IkeProposal]:
    # RFC 8247 §2-2.4: AES-GCM-16 and PRF_HMAC_SHA2_256 MUST; Curve25519
    # (31) and ECP 256 (19) SHOULD.
    return [
        IkeProposal(encryption="aes128gcm16", prf="prfsha256", dh="curve25519"),
        IkeProposal(encryption="aes128gcm16", prf="prfsha256", dh="ecp256"),
    ]


def _default_esp_proposals() -> list[EspProposal]:
    # RFC 8221 §5: ENCR_AES_GCM_16 MUST.
    return [EspProposal(encryption="aes128gcm16")]


class IpsecProfile(_Model):
    """How a trunk or mesh peer is protected: proposals, authentication,
    mode and timers. Shared: whom to protect lives on the trunk or peer."""

    name: Name
    ike_proposals: list[IkeProposal] = Field(
        default_factory=_default_ike_proposals, min_length=1
    )
    """In order of preference; default AES-GCM-16/PRF-SHA256 with X25519,
    then ECP 256 (RFC 8247)."""
    esp_proposals: list[EspProposal] = Field(
        default_factory=_default_esp_proposals, min_length=1
    )
    """In order of preference; default AES-GCM-16 128 with ESN (RFC 8221)."""
    auth: Literal["psk", "certificate"] = "psk"
    psk: Secret | None = None
    """Pre-shared key (auth psk); sealed at rest, never returned."""
    certificate: Pem | None = None
    """PEM certificate chain of this node (auth certificate)."""
    private_key: Secret | None = None
    """PEM private key of ``certificate``; sealed at rest, never returned."""
    ca_certificates: list[Pem] = Field(default_factory=list)
    """PEM trust anchors for the peers' certificates."""
    mode: Literal["tunnel", "transport"] = "transport"
    """transport: the SBC's trunk address talks straight to each target;
    tunnel: its inner address to the peer's inner networks, via a gateway."""
    start_action: Literal["start", "none"] = "start"
    """start: this node initiates the IKE_SA as soon as the trunk is
    configured; none: it waits for the peer. Mesh peers ignore it (the
    node with the lower IKE address initiates)."""
    lifetimes: Lifetimes = Field(default_factory=Lifetimes)
    dpd: Dpd | None = Field(default_factory=Dpd)
    """None: no liveness checks; a vanished peer is noticed at the next rekey."""
    retransmission: Retransmission = Field(default_factory=Retransmission)

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
        elif not self.ca_certificates:
            raise PydanticCustomError(
                "auth", "auth certificate needs ca_certificates to check the peer"
            )
        elif self.psk is not None:
            raise PydanticCustomError("auth", "psk belongs to auth psk")
        return self


def identity_bytes(identity_type: IdentityType, value: str) -> bytes:
    """The Identification Data of an ID payload (RFC 7296 §3.5).

    ipv4/ipv6: the packed address; dn: the DER of an RFC 4514 name
    (``CN=sbc-a,O=Example``); fqdn, email, key_id: the text as octets.
    Raises ValueError when the value does not fit the type.
    """
    if identity_type in ("ipv4", "ipv6"):
        address = ipaddress.ip_address(value)
        if address.version != (4 if identity_type == "ipv4" else 6):
            raise ValueError(f"not an {identity_type} address")
        return address.packed
    if identity_type == "dn":
        return x509.Name.from_rfc4514_string(value).public_bytes()
    if identity_type == "email" and "@" not in value:
        raise ValueError("an email identity needs an @")
    return value.encode()


def check_identity(identity_type: IdentityType, value: str | None) -> None:
    """Raise the model's error when ``value`` does not fit its type."""
    if value is None:
        return
    try:
        identity_bytes(identity_type, value)
    except ValueError as exc:
        raise PydanticCustomError(
            "identity", f"identity does not fit type {identity_type}: {exc}"
        ) from None


class MeshPeer(_Model):
    """Another SBC node reached over IPsec.

    Each mesh peer becomes a derived ``peer-sbc`` trunk of the same name
    (:func:`sbc.secure.derive.mesh_trunks`), so dial-plan routes name a
    peer node like any trunk.
    """

    name: Name
    address: IPAddressField
    """The peer's outer (IKE) address."""
    identity_type: IdentityType = "fqdn"
    identity: Text
    """The IDr/IDi value the peer must present (RFC 7296 §3.5)."""
    profile: Name
    """The IPsec profile protecting traffic with this peer."""
    sip_address: IPAddressField | None = None
    """Where the peer's mesh listener is: its IKE ``address`` in transport
    mode (unset means that), an address inside ``inner_networks`` in tunnel
    mode."""
    sip_port: Annotated[int, NOT_BOOL, Field(ge=1, le=65535)] = 5060
    inner_networks: list[IPNetworkField] = Field(default_factory=list)
    """Tunnel mode: the peer's inner networks (its SIP and media addresses);
    the traffic selectors on its side."""

    @model_validator(mode="after")
    def _identity_fits(self) -> Self:
        check_identity(self.identity_type, self.identity)
        return self


class IpsecNode(_Model):
    """This node's end of every IPsec peering (the ``ipsec`` section).

    Node-local: each node of a mesh has its own. IKE listens on UDP
    ``ike_port`` and, with ESP, on ``nat_t_port`` (RFC 3948). UDP
    encapsulation is always forced (strongSwan's ``encap = yes``): the SBC
    carries SIP and RTP through the data plane's in-process channel, which
    only ESP in UDP reaches, and the peer must encapsulate too.
    """

    node: Name
    """This node's name in the mesh."""
    address: IPAddressField
    """Local address IKE and ESP-in-UDP bind (a concrete address: NAT
    detection hashes it); in transport mode also the address of every
    protected listener."""
    identity_type: IdentityType = "fqdn"
    identity: Text | None = None
    """What this node authenticates as (IDi/IDr); unset: ``address`` as an
    ID_IPV4_ADDR / ID_IPV6_ADDR, strongSwan's default."""
    ike_port: Port = 500
    nat_t_port: Port = 4500
    mesh_listener: Name | None = None
    """The ``ipsec: true`` listener the mesh peers' derived trunks use."""
    mesh_dial_plan: Name | None = None
    """Dial plan for calls arriving from mesh peers; unset refuses them."""

    @model_validator(mode="after")
    def _identity_fits(self) -> Self:
        check_identity(self.identity_type, self.identity)
        if self.address.is_unspecified:
            raise PydanticCustomError(
                "address", "IKE needs a concrete address, not a wildcard"
            )
        return self
