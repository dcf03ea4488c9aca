"""Authentication with X.509 certificates (RFC 7296 §2.15, §3.6-3.8; RFC 7427).

AUTH by signature comes in three forms here:

- method 1, RSA Digital Signature: PKCS#1 v1.5 over SHA-1 (RFC 7296 §3.8);
- methods 9 and 10, ECDSA over P-256/SHA-256 and P-384/SHA-384 with the
  signature as r | s (RFC 4754), accepted from peers that lack RFC 7427;
- method 14, Digital Signature (RFC 7427): the data starts with the length
  and DER of an AlgorithmIdentifier naming the scheme, then the signature.
  RSA-PSS, RSA PKCS#1 v1.5 with SHA-2, ECDSA (DER signature) and Ed25519.

Method 14 is sent only to a peer that announced SIGNATURE_HASH_ALGORITHMS
in IKE_SA_INIT (RFC 7427 §4), with a hash it listed.

Chains are checked with ``cryptography.x509.verification`` against the
configured CAs: the CA certificates under the Web PKI profile (basic
constraints, key usage), the end-entity certificate under no extension
policy at all, since IKE certificates carry no fixed extended key usage
(RFC 4945 §5.1.3.12 leaves it open). Any failure is AUTHENTICATION_FAILED.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from .constants import AuthMethod, CertEncoding, IdType, NotifyType
from .errors import AuthenticationFailed
from .payloads import AuthPayload, CertPayload, CertReqPayload, IdPayload, NotifyPayload

logger = logging.getLogger("ipsec.ike")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_MAX_CHAIN_DEPTH = 8


class HashAlgorithm(IntEnum):
    """IANA "Hash Algorithms" for SIGNATURE_HASH_ALGORITHMS (RFC 7427 §7)."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5  # RFC 8420: Ed25519 signs the octets themselves


SUPPORTED_HASHES = (
    HashAlgorithm.SHA2_256,
    HashAlgorithm.SHA2_384,
    HashAlgorithm.SHA2_512,
    HashAlgorithm.IDENTITY,
)


@dataclass(frozen=True, slots=True)
class LocalCertificate:
    """Our certificate, the CA certificates between it and the peer's trust
    anchor, and its private key (never printed)."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)
    intermediates: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        # Refused here, so that signing in IKE_AUTH cannot fail later.
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if key.curve.name not in _RFC4754:
                raise ValueError(f"curve {key.curve.name} is not supported")
        elif not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise ValueError("only RSA, ECDSA and Ed25519 keys sign IKE AUTH")


@dataclass(frozen=True, slots=True)
class CertificateAuthentication:
    """How an IKE_SA authenticates with certificates.

    With ``local`` set we sign our AUTH; with ``trust_anchors`` set the peer
    must sign its AUTH with a certificate that chains to one of them.
    """

    local: LocalCertificate | None = None
    trust_anchors: tuple[x509.Certificate, ...] = ()
    validation_time: Callable[[], datetime] = field(
        default=lambda: datetime.now().astimezone(), repr=False
    )
    """Wall-clock time to check validity periods against (injected for tests)."""

    @property
    def requires_peer_certificate(self) -> bool:
        return bool(self.trust_anchors)

    @classmethod
    def from_pem(
        cls,
        *,
        certificate: bytes | None = None,
        private_key: bytes | None = None,
        intermediates: bytes = b"",
        trust_anchors: bytes = b"",
        password: bytes | None = None,
    ) -> CertificateAuthentication:
        """Build from PEM text, as an admin plane or a file would give it.

        ``intermediates`` and ``trust_anchors`` may hold several
        certificates each. Raises ValueError for anything that does not load.
        """
        local = None
        if certificate is not None and private_key is not None:
            try:
                key = serialization.load_pem_private_key(private_key, password)
            except (TypeError, UnsupportedAlgorithm) as error:
                # A password given or missing, or a key type unknown here.
                raise ValueError(f"private key does not load: {error}") from None
            if not isinstance(
                key,
                (
                    rsa.RSAPrivateKey,
                    ec.EllipticCurvePrivateKey,
                    ed25519.Ed25519PrivateKey,
                ),
            ):
                raise ValueError("only RSA, ECDSA and Ed25519 keys sign IKE AUTH")
            local = LocalCertificate(
                x509.load_pem_x509_certificate(certificate),
                key,
                tuple(_load_pems(intermediates)),
            )
        return cls(local, tuple(_load_pems(trust_anchors)))


def _load_pems(text: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text) if text.strip() else []


# ---------------------------------------------------------------------------
# The AlgorithmIdentifier blobs of RFC 7427 Appendix A, built once from DER


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8)
    return bytes((tag, 0x80 | len(length))) + length + body


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytearray((first * 40 + second,))
    for arc in rest:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _algorithm_identifier(oid: str, parameters: bytes = b"") -> bytes:
    return _der(0x30, _oid(oid) + parameters)


_NULL = b"\x05\x00"
_HASH_OIDS = {
    HashAlgorithm.SHA2_256: "2.16.840.1.101.3.4.2.1",
    HashAlgorithm.SHA2_384: "2.16.840.1.101.3.4.2.2",
    HashAlgorithm.SHA2_512: "2.16.840.1.101.3.4.2.3",
}
_HASHES: dict[HashAlgorithm, Callable[[], hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
}


def _pss_parameters(hash_id: HashAlgorithm) -> bytes:
    """RSASSA-PSS-params (RFC 4055 §3.1): hash, MGF1 with it, salt = hash size."""
    hash_algorithm = _algorithm_identifier(_HASH_OIDS[hash_id], _NULL)
    mgf1 = _algorithm_identifier("1.2.840.113549.1.1.8", hash_algorithm)
    salt = _der(0x02, bytes((_HASHES[hash_id]().digest_size,)))
    return _der(0x30, _der(0xA0, hash_algorithm) + _der(0xA1, mgf1) + _der(0xA2, salt))


class SignatureKind(IntEnum):
    """The signature algorithm family an AlgorithmIdentifier names."""

    RSA_PKCS1 = 1
    RSA_PSS = 2
    ECDSA = 3
    ED25519 = 4


@dataclass(frozen=True, slots=True)
class SignatureScheme:
    """One RFC 7427 signature scheme and its AlgorithmIdentifier."""

    kind: SignatureKind
    hash_id: HashAlgorithm
    algorithm_identifier: bytes


# RFC 4055 §5 and RFC 8017 Appendix C (RSA), RFC 5758 §3.2 (ECDSA),
# RFC 8410 §3 (Ed25519).
_RSASSA_PSS = "1.2.840.113549.1.1.10"
_ED25519 = "1.3.101.112"
_RSA_PKCS1_OIDS = {
    HashAlgorithm.SHA2_256: "1.2.840.113549.1.1.11",
    HashAlgorithm.SHA2_384: "1.2.840.113549.1.1.12",
    HashAlgorithm.SHA2_512: "1.2.840.113549.1.1.13",
}
_ECDSA_OIDS = {
    HashAlgorithm.SHA2_256: "1.2.840.10045.4.3.2",
    HashAlgorithm.SHA2_384: "1.2.840.10045.4.3.3",
    HashAlgorithm.SHA2_512: "1.2.840.10045.4.3.4",
}


def _scheme(kind: SignatureKind, hash_id: HashAlgorithm) -> SignatureScheme:
    if kind is SignatureKind.RSA_PSS:
        blob = _algorithm_identifier(_RSASSA_PSS, _pss_parameters(hash_id))
    elif kind is SignatureKind.ECDSA:
        blob = _algorithm_identifier(_ECDSA_OIDS[hash_id])
    elif kind is SignatureKind.RSA_PKCS1:
        blob = _algorithm_identifier(_RSA_PKCS1_OIDS[hash_id], _NULL)
    else:
        blob = _algorithm_identifier(_ED25519)
    return SignatureScheme(kind, hash_id, blob)


SIGNATURE_SCHEMES = (
    *(
        _scheme(kind, hash_id)
        for kind in (
            SignatureKind.RSA_PSS,
            SignatureKind.ECDSA,
            SignatureKind.RSA_PKCS1,
        )
        for hash_id in _HASHES
    ),
    _scheme(SignatureKind.ED25519, HashAlgorithm.IDENTITY),
)
_SCHEME_BY_BLOB = {scheme.algorithm_identifier: scheme for scheme in SIGNATURE_SCHEMES}
_SCHEME_BY_KIND = {
    (scheme.kind, scheme.hash_id): scheme for scheme in SIGNATURE_SCHEMES
}


# ---------------------------------------------------------------------------
# IKE_SA_INIT and IKE_AUTH payloads


def signature_hash_notify() -> NotifyPayload:
    """N(SIGNATURE_HASH_ALGORITHMS) with every hash we verify (RFC 7427 §4)."""
    data = b"".join(h.to_bytes(2) for h in SUPPORTED_HASHES)
    return NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data)


def parse_hash_algorithms(data: bytes) -> frozenset[int]:
    """The 2-octet hash identifiers of a peer's SIGNATURE_HASH_ALGORITHMS."""
    return frozenset(
        int.from_bytes(data[i : i + 2]) for i in range(0, len(data) - 1, 2)
    )


def certificate_request(trust_anchors: Iterable[x509.Certificate]) -> CertReqPayload:
    """CERTREQ naming our CAs by the SHA-1 of their public keys (§3.7)."""
    hashes_of_keys = b"".join(
        hashlib.sha1(_spki(ca), usedforsecurity=False).digest() for ca in trust_anchors
    )
    return CertReqPayload(CertEncoding.X509_SIGNATURE, hashes_of_keys)


def certificate_payloads(local: LocalCertificate) -> list[CertPayload]:
    """Our certificate first (§3.6: it holds the signing key), then the chain."""
    chain = (local.certificate, *local.intermediates)
    return [
        CertPayload(
            CertEncoding.X509_SIGNATURE, c.public_bytes(serialization.Encoding.DER)
        )
        for c in chain
    ]


def _spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ---------------------------------------------------------------------------
# Signing


def sign_auth(
    private_key: PrivateKey, octets: bytes, peer_hashes: frozenset[int]
) -> AuthPayload:
    """AUTH over the signed octets: method 14 with a hash the peer announced,
    otherwise the classic method of the key type."""
    scheme = _choose_scheme(private_key, peer_hashes)
    if scheme is not None:
        signature = _sign(private_key, scheme, octets)
        blob = scheme.algorithm_identifier
        data = bytes((len(blob),)) + blob + signature
        return AuthPayload(AuthMethod.DIGITAL_SIGNATURE, data)
    if isinstance(private_key, rsa.RSAPrivateKey):
        # RFC 7296 §3.8: method 1 is PKCS#1 v1.5 with SHA-1.
        signature = private_key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
        return AuthPayload(AuthMethod.RSA_DIGITAL_SIGNATURE, signature)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return _sign_rfc4754(private_key, octets)
    raise AuthenticationFailed("no AUTH method for this key")


def _choose_scheme(
    private_key: PrivateKey, peer_hashes: frozenset[int]
) -> SignatureScheme | None:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        # RFC 8420 §2: Ed25519 exists only as method 14, Identity "hash".
        return _SCHEME_BY_KIND[(SignatureKind.ED25519, HashAlgorithm.IDENTITY)]
    kinds: tuple[SignatureKind, ...] = (SignatureKind.ECDSA,)
    preferred = tuple(_HASHES)
    if isinstance(private_key, rsa.RSAPrivateKey):
        kinds = (SignatureKind.RSA_PSS, SignatureKind.RSA_PKCS1)
    elif private_key.curve.key_size > 256:
        # Match the hash to the curve's strength first (RFC 5656 §6.2.1).
        preferred = (HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512, *preferred)
    for kind in kinds:
        for hash_id in preferred:
            if hash_id in peer_hashes:
                return _SCHEME_BY_KIND[(kind, hash_id)]
    return None


def _sign(private_key: PrivateKey, scheme: SignatureScheme, octets: bytes) -> bytes:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(octets)
    algorithm = _HASHES[scheme.hash_id]()
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(octets, ec.ECDSA(algorithm))
    return private_key.sign(octets, _rsa_padding(scheme), algorithm)


def _rsa_padding(scheme: SignatureScheme) -> padding.AsymmetricPadding:
    if scheme.kind is SignatureKind.RSA_PSS:
        algorithm = _HASHES[scheme.hash_id]()
        return padding.PSS(padding.MGF1(algorithm), algorithm.digest_size)
    return padding.PKCS1v15()


# The NIST curves of RFC 4754, by the name cryptography gives them; no other
# curve is accepted in a key or a certificate.
_RFC4754 = {
    "secp256r1": (AuthMethod.ECDSA_SHA256_P256, hashes.SHA256),
    "secp384r1": (AuthMethod.ECDSA_SHA384_P384, hashes.SHA384),
    "secp521r1": (AuthMethod.ECDSA_SHA512_P521, hashes.SHA512),
}

_RFC4754_METHODS = frozenset(method for method, _ in _RFC4754.values())


def _sign_rfc4754(
    private_key: ec.EllipticCurvePrivateKey, octets: bytes
) -> AuthPayload:
    method, algorithm = _RFC4754[private_key.curve.name]
    r, s = decode_dss_signature(private_key.sign(octets, ec.ECDSA(algorithm())))
    width = (private_key.curve.key_size + 7) // 8
    return AuthPayload(method, r.to_bytes(width) + s.to_bytes(width))


# ---------------------------------------------------------------------------
# Verifying


def verify_auth(
    certificate: x509.Certificate, auth: AuthPayload, octets: bytes
) -> None:
    """Check the peer's AUTH signature with its certificate's key."""
    public_key = certificate.public_key()
    if not isinstance(
        public_key,
        (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey),
    ):
        raise AuthenticationFailed("certificate key type not supported")
    if isinstance(public_key, ec.EllipticCurvePublicKey) and (
        public_key.curve.name not in _RFC4754
    ):
        raise AuthenticationFailed(f"curve {public_key.curve.name} not supported")
    try:
        _verify(public_key, auth, octets)
    except InvalidSignature:
        raise AuthenticationFailed("AUTH signature does not verify") from None


def _verify(public_key: PublicKey, auth: AuthPayload, octets: bytes) -> None:
    data = auth.authentication_data
    method = auth.auth_method
    if method == AuthMethod.DIGITAL_SIGNATURE:
        scheme, signature = _split_rfc7427(data)
        _verify_scheme(public_key, scheme, signature, octets)
    elif method == AuthMethod.RSA_DIGITAL_SIGNATURE and isinstance(
        public_key, rsa.RSAPublicKey
    ):
        public_key.verify(data, octets, padding.PKCS1v15(), hashes.SHA1())
    elif method in _RFC4754_METHODS and isinstance(
        public_key, ec.EllipticCurvePublicKey
    ):
        _verify_rfc4754(public_key, AuthMethod(method), data, octets)
    else:
        raise AuthenticationFailed(
            f"AUTH method {method} does not fit the certificate key"
        )


def _split_rfc7427(data: bytes) -> tuple[SignatureScheme, bytes]:
    # RFC 7427 §3: one octet of ASN.1 length, the AlgorithmIdentifier, the signature.
    if not data:
        raise AuthenticationFailed("empty Digital Signature AUTH")
    size = data[0]
    scheme = _SCHEME_BY_BLOB.get(data[1 : 1 + size])
    if scheme is None:
        raise AuthenticationFailed("signature algorithm not supported")
    return scheme, data[1 + size :]


def _verify_scheme(
    public_key: PublicKey, scheme: SignatureScheme, signature: bytes, octets: bytes
) -> None:
    if scheme.kind is SignatureKind.ED25519 and isinstance(
        public_key, ed25519.Ed25519PublicKey
    ):
        public_key.verify(signature, octets)
        return
    if scheme.kind is SignatureKind.ED25519:
        raise AuthenticationFailed("Ed25519 signature from another key type")
    algorithm = _HASHES[scheme.hash_id]()
    if scheme.kind is SignatureKind.ECDSA and isinstance(
        public_key, ec.EllipticCurvePublicKey
    ):
        public_key.verify(signature, octets, ec.ECDSA(algorithm))
    elif scheme.kind is not SignatureKind.ECDSA and isinstance(
        public_key, rsa.RSAPublicKey
    ):
        public_key.verify(signature, octets, _rsa_padding(scheme), algorithm)
    else:
        raise AuthenticationFailed(
            f"{scheme.kind.name} signature from another key type"
        )


def _verify_rfc4754(
    public_key: ec.EllipticCurvePublicKey,
    method: AuthMethod,
    data: bytes,
    octets: bytes,
) -> None:
    expected, algorithm = _RFC4754[public_key.curve.name]
    width = (public_key.curve.key_size + 7) // 8
    if expected != method or len(data) != 2 * width:
        raise AuthenticationFailed("ECDSA AUTH method does not fit the curve")
    r, s = int.from_bytes(data[:width]), int.from_bytes(data[width:])
    public_key.verify(encode_dss_signature(r, s), octets, ec.ECDSA(algorithm()))


def verify_chain(
    cert_payloads: Iterable[CertPayload], authentication: CertificateAuthentication
) -> x509.Certificate:
    """The peer's end-entity certificate, once its chain reaches a trust anchor.

    The first X.509 CERT payload is the end entity (RFC 7296 §3.6); the
    others may supply intermediates in any order.
    """
    certificates = []
    for payload in cert_payloads:
        if payload.encoding != CertEncoding.X509_SIGNATURE:
            continue  # other encodings are not used here
        try:
            certificates.append(x509.load_der_x509_certificate(payload.data))
        except ValueError:
            raise AuthenticationFailed("CERT payload does not decode") from None
    if not certificates:
        raise AuthenticationFailed("no X.509 certificate from the peer")
    if not authentication.trust_anchors:
        raise AuthenticationFailed("no CA configured to trust the peer's certificate")
    leaf, intermediates = certificates[0], certificates[1:]
    verifier = (
        PolicyBuilder()
        .store(Store(list(authentication.trust_anchors)))
        .time(authentication.validation_time())
        .max_chain_depth(_MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as error:
        raise AuthenticationFailed(f"certificate chain refused: {error}") from None
    return leaf


def check_identity(certificate: x509.Certificate, identity: IdPayload) -> None:
    """The ID payload must name the certificate's subject or one of its
    subjectAltNames (RFC 4945 §3.1)."""
    id_type, data = identity.id_type, identity.data
    if id_type == IdType.ID_DER_ASN1_DN:
        if data != certificate.subject.public_bytes():
            raise AuthenticationFailed("ID_DER_ASN1_DN is not the certificate subject")
        return
    names = _subject_alt_names(certificate)
    wanted: object
    found: set[object]
    if id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
        # Names compare without regard to case (RFC 4945 §3.1.2, §3.1.3).
        wanted = data.decode("ascii", "replace").lower()
        found = {n.lower() for n in _text_names(names, id_type)}
    elif id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
        wanted = _address(id_type, data)
        found = set(names.get_values_for_type(x509.IPAddress)) if names else set()
    else:
        raise AuthenticationFailed(
            f"ID type {id_type} cannot be bound to a certificate"
        )
    if wanted not in found:
        raise AuthenticationFailed(
            "identity not among the certificate's subjectAltNames"
        )


def _text_names(names: x509.SubjectAlternativeName | None, id_type: int) -> list[str]:
    if names is None:
        return []
    if id_type == IdType.ID_FQDN:
        return names.get_values_for_type(x509.DNSName)
    return names.get_values_for_type(x509.RFC822Name)


def _subject_alt_names(
    certificate: x509.Certificate,
) -> x509.SubjectAlternativeName | None:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        return None


def _address(id_type: int, data: bytes) -> IPv4Address | IPv6Address | None:
    if id_type == IdType.ID_IPV4_ADDR and len(data) == 4:
        return IPv4Address(data)
    if id_type == IdType.ID_IPV6_ADDR and len(data) == 16:
        return IPv6Address(data)
    return None


def authenticate_peer(
    cert_payloads: Iterable[CertPayload],
    identity: IdPayload,
    auth: AuthPayload,
    octets: bytes,
    authentication: CertificateAuthentication,
) -> x509.Certificate:
    """Chain, identity and signature checks of a peer's IKE_AUTH, in that
    order; returns its end-entity certificate or raises AuthenticationFailed.
    """
    if auth.auth_method == AuthMethod.SHARED_KEY_MIC:
        raise AuthenticationFailed("PSK authentication where a certificate is due")
    try:
        leaf = verify_chain(cert_payloads, authentication)
        check_identity(leaf, identity)
        verify_auth(leaf, auth, octets)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        # Malformed keys, extensions or signatures in attacker-chosen input.
        raise AuthenticationFailed(f"certificate unusable: {error}") from None
    logger.debug(
        "peer authenticated by certificate %s (AUTH method %d)",
        leaf.subject.rfc4514_string(),
        auth.auth_method,
    )
    return leaf
