"""IKEv2 key schedule: SKEYSEED, SK_*, CHILD_SA KEYMAT and PSK AUTH.

RFC 7296 §2.14 (IKE SA keys), §2.17 (CHILD_SA keys), §2.18 (IKE SA rekey)
and §2.15 (AUTH with a shared secret). Key holders print as sizes only, so a
stray ``log.debug("%s", keys)`` cannot leak them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import constant_time

from .crypto import EncrAlgorithm, IntegAlgorithm, PrfAlgorithm, SkCipher
from .errors import AuthenticationFailed
from .payloads import IdPayload

# RFC 7296 §2.15: the pad that turns a shared secret into a PRF key.
KEY_PAD = b"Key Pad for IKEv2"


class _RedactedRepr:
    """Mixin for dataclasses whose fields are all secrets."""

    __slots__ = ()

    def __repr__(self) -> str:
        names: tuple[str, ...] = type(self).__slots__
        sizes = ", ".join(
            f"{name}=<{len(getattr(self, name))} octets>" for name in names
        )
        return f"{type(self).__name__}({sizes})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class IkeSaTransforms:
    """The transforms negotiated for an IKE SA."""

    encr: EncrAlgorithm
    prf: PrfAlgorithm
    integ: IntegAlgorithm | None
    """None with an AEAD cipher (RFC 5282 §8)."""


@dataclass(frozen=True, slots=True, repr=False)
class IkeSaKeys(_RedactedRepr):
    """SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr (RFC 7296 §2.14)."""

    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes


def compute_skeyseed(
    prf: PrfAlgorithm, nonce_i: bytes, nonce_r: bytes, shared_secret: bytes
) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) for a new IKE SA (RFC 7296 §2.14)."""
    return prf.prf(nonce_i + nonce_r, shared_secret)


def compute_rekeyed_skeyseed(
    old_prf: PrfAlgorithm,
    old_sk_d: bytes,
    shared_secret: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) (RFC 7296 §2.18).

    Uses the PRF of the IKE SA being rekeyed; the new SA's PRF only expands.
    """
    return old_prf.prf(old_sk_d, shared_secret + nonce_i + nonce_r)


def derive_ike_sa_keys(
    transforms: IkeSaTransforms,
    skeyseed: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeSaKeys:
    """Expand SKEYSEED with prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) (§2.14)."""
    prf_size = transforms.prf.key_size
    integ_size = transforms.integ.key_size if transforms.integ else 0
    encr_size = transforms.encr.key_size
    sizes = (prf_size, integ_size, integ_size, encr_size, encr_size, prf_size, prf_size)
    stream = transforms.prf.prf_plus(
        skeyseed, nonce_i + nonce_r + spi_i + spi_r, sum(sizes)
    )
    return IkeSaKeys(*_split(stream, sizes))


def sk_ciphers(
    transforms: IkeSaTransforms, keys: IkeSaKeys
) -> tuple[SkCipher, SkCipher]:
    """The SK payload ciphers (initiator-to-responder, responder-to-initiator)."""
    outbound_i = SkCipher(transforms.encr, transforms.integ, keys.sk_ei, keys.sk_ai)
    outbound_r = SkCipher(transforms.encr, transforms.integ, keys.sk_er, keys.sk_ar)
    return outbound_i, outbound_r


@dataclass(frozen=True, slots=True, repr=False)
class ChildSaKeys(_RedactedRepr):
    """KEYMAT split per direction (RFC 7296 §2.17).

    ``*_i`` keys protect traffic from the IKE_SA initiator to the
    responder, ``*_r`` the other way; AEAD encryption keys end with their
    4-octet salt.
    """

    encryption_key_i: bytes
    integrity_key_i: bytes
    encryption_key_r: bytes
    integrity_key_r: bytes


def derive_child_sa_keys(
    prf: PrfAlgorithm,
    sk_d: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    encryption_key_size: int,
    integrity_key_size: int,
    shared_secret: bytes | None = None,
) -> ChildSaKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 §2.17).

    ``shared_secret`` is the new DH secret of a CREATE_CHILD_SA with PFS;
    leave it None without PFS and in IKE_AUTH. The nonces are those of the
    exchange that creates the CHILD_SA.
    """
    seed = (shared_secret or b"") + nonce_i + nonce_r
    sizes = (encryption_key_size, integrity_key_size) * 2
    stream = prf.prf_plus(sk_d, seed, sum(sizes))
    return ChildSaKeys(*_split(stream, sizes))


def _split(stream: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    parts = []
    offset = 0
    for size in sizes:
        parts.append(stream[offset : offset + size])
        offset += size
    return parts


@dataclass(frozen=True, slots=True, repr=False)
class PresharedKey:
    """A configured PSK; printing it shows nothing of the secret."""

    secret: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "PresharedKey(<redacted>)"

    __str__ = __repr__


def signed_octets(
    prf: PrfAlgorithm,
    real_message: bytes,
    peer_nonce: bytes,
    sk_p: bytes,
    id_payload: IdPayload,
) -> bytes:
    """InitiatorSignedOctets or ResponderSignedOctets (RFC 7296 §2.15).

    ``real_message`` is our own first message exactly as sent (IKE_SA_INIT
    request for the initiator, response for the responder), ``peer_nonce``
    the other side's nonce data, ``sk_p`` our SK_pi or SK_pr, and
    ``id_payload`` our IDi or IDr (its body: ID type, reserved, data).
    """
    maced_id = prf.prf(sk_p, id_payload.encode_body())
    return real_message + peer_nonce + maced_id


def psk_auth_data(prf: PrfAlgorithm, psk: PresharedKey, octets: bytes) -> bytes:
    """AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)."""
    return prf.prf(prf.prf(psk.secret, KEY_PAD), octets)


def verify_psk_auth(
    prf: PrfAlgorithm, psk: PresharedKey, octets: bytes, received: bytes
) -> None:
    """Check the peer's AUTH data in constant time."""
    expected = psk_auth_data(prf, psk, octets)
    if not constant_time.bytes_eq(expected, received):
        raise AuthenticationFailed("PSK AUTH data does not match")
