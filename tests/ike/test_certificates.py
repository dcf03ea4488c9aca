"""IKE_AUTH with X.509 certificates: two engines in memory, a PKI generated
here, and every way it must refuse (RFC 7296 §2.15, §3.6-3.8; RFC 7427)."""

import datetime
import hashlib
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ipsec.ike.certificates import (
    SIGNATURE_SCHEMES,
    CertificateAuthentication,
    HashAlgorithm,
    LocalCertificate,
    SignatureKind,
    authenticate_peer,
    check_identity,
    sign_auth,
    verify_auth,
)
from ipsec.ike.config import Identity
from ipsec.ike.constants import AuthMethod, CertEncoding, IdType, NotifyType
from ipsec.ike.errors import AuthenticationFailed
from ipsec.ike.events import IkeSaEstablished, IkeSaFailed
from ipsec.ike.ike_sa import IkeSa, IkeSaState
from ipsec.ike.message import decode_message
from ipsec.ike.payloads import AuthPayload, CertPayload, CertReqPayload, IdPayload

from .test_ike_sa import drain, exchange_all, make_config, seeded

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
SBC_ID = Identity(IdType.ID_FQDN, b"sbc.example.com")
TRUNK_ID = Identity(IdType.ID_FQDN, b"trunk.example.com")


# ---------------------------------------------------------------------------
# A small PKI, generated per test module


def new_key(kind):
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "k256":
        return ec.generate_private_key(ec.SECP256K1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sign_with(issuer_key):
    # Ed25519 signs without a separate hash.
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return None
    return hashes.SHA256()


@dataclass
class Authority:
    key: object
    certificate: x509.Certificate
    serial: list = field(default_factory=lambda: [100])

    @classmethod
    def root(cls, name="Test Root CA", kind="p256"):
        key = new_key(kind)
        certificate = (
            _builder(
                _name(name),
                _name(name),
                key.public_key(),
                1,
                NOW - DAY,
                NOW + 365 * DAY,
            )
            .add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            )
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False,
            )
            .sign(key, _sign_with(key))
        )
        return cls(key, certificate)

    def intermediate(self, name="Test Intermediate CA", kind="p256"):
        key = new_key(kind)
        certificate = (
            self._issue(_name(name), key.public_key(), NOW - DAY, NOW + 100 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False,
            )
            .sign(self.key, _sign_with(self.key))
        )
        return Authority(key, certificate)

    def end_entity(
        self, names, kind="p256", common_name="sbc",
        not_before=NOW - DAY, not_after=NOW + 30 * DAY,
    ):  # fmt: skip
        key = new_key(kind)
        certificate = (
            self._issue(_name(common_name), key.public_key(), not_before, not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .sign(self.key, _sign_with(self.key))
        )
        return certificate, key

    def _issue(self, subject, public_key, not_before, not_after):
        self.serial[0] += 1
        return _builder(
            subject, self.certificate.subject, public_key, self.serial[0],
            not_before, not_after,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
            critical=False,
        )  # fmt: skip


def _builder(subject, issuer, public_key, serial, not_before, not_after):
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _ca_key_usage():
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True,
        crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def dns(name):
    return [x509.DNSName(name)]


@pytest.fixture(scope="module")
def root():
    return Authority.root()


def credentials(authority, names, anchors, kind="p256", chain=(), when=NOW, **issue):
    certificate, key = authority.end_entity(names, kind, **issue)
    return CertificateAuthentication(
        LocalCertificate(certificate, key, tuple(chain)),
        tuple(anchors),
        lambda: when,
    )


def cert_pair(sbc_auth, trunk_auth, seed=1, **changes):
    initiator = IkeSa(
        make_config(SBC_ID, TRUNK_ID, psk=None, certificates=sbc_auth, **changes),
        is_initiator=True,
        local_spi=bytes.fromhex("1111111111111111"),
        random_bytes=seeded(seed),
    )
    responder = IkeSa(
        make_config(TRUNK_ID, SBC_ID, psk=None, certificates=trunk_auth, **changes),
        is_initiator=False,
        local_spi=bytes.fromhex("2222222222222222"),
        random_bytes=seeded(seed + 1000),
    )
    return initiator, responder


def run_handshake(initiator, responder, log=None):
    initiator.initiate(0.0)
    exchange_all(initiator, responder, log=log)
    return drain(initiator), drain(responder)


def failure(events):
    return next(e for e in events if isinstance(e, IkeSaFailed))


# ---------------------------------------------------------------------------
# Handshakes that succeed


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa", "ed25519"])
def test_certificate_handshake_establishes_with_each_key_type(root, kind):
    sbc = credentials(root, dns("sbc.example.com"), [root.certificate], kind)
    trunk = credentials(root, dns("trunk.example.com"), [root.certificate], kind)

    i_events, r_events = run_handshake(*cert_pair(sbc, trunk))

    assert isinstance(i_events[0], IkeSaEstablished)
    assert isinstance(r_events[0], IkeSaEstablished)
    assert r_events[0].remote_id == SBC_ID.as_idi()


def test_chain_through_an_intermediate_ca_establishes(root):
    intermediate = root.intermediate()
    chain = [intermediate.certificate]
    sbc = credentials(
        intermediate, dns("sbc.example.com"), [root.certificate], chain=chain
    )
    trunk = credentials(root, dns("trunk.example.com"), [root.certificate])

    initiator, responder = cert_pair(sbc, trunk)
    run_handshake(initiator, responder)

    assert initiator.state is responder.state is IkeSaState.ESTABLISHED


def test_ike_sa_init_carries_hash_algorithms_and_certreq(root):
    sbc = credentials(root, dns("sbc.example.com"), [root.certificate])
    trunk = credentials(root, dns("trunk.example.com"), [root.certificate])
    log = []

    run_handshake(*cert_pair(sbc, trunk), log=log)

    request, response = (decode_message(data) for _, data in log[:2])
    wanted = NotifyType.SIGNATURE_HASH_ALGORITHMS
    announced = request.notify(wanted).notification_data
    [certreq] = response.all(CertReqPayload)
    spki = root.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert announced == bytes.fromhex("0002000300040005")
    assert response.notify(wanted) is not None
    assert certreq.certification_authority == hashlib.sha1(spki).digest()


# ---------------------------------------------------------------------------
# Handshakes that must fail with AUTHENTICATION_FAILED


def assert_refused_by_responder(initiator, responder):
    i_events, r_events = run_handshake(initiator, responder)

    assert initiator.state is responder.state is IkeSaState.FAILED
    assert failure(r_events).notify_type == NotifyType.AUTHENTICATION_FAILED
    assert failure(i_events).notify_type == NotifyType.AUTHENTICATION_FAILED
    return failure(r_events).reason


def test_certificate_from_an_untrusted_ca_is_refused(root):
    stranger = Authority.root("Stranger CA")
    sbc = credentials(stranger, dns("sbc.example.com"), [root.certificate])
    trunk = credentials(root, dns("trunk.example.com"), [root.certificate])

    reason = assert_refused_by_responder(*cert_pair(sbc, trunk))

    assert "chain" in reason


def test_chain_missing_its_intermediate_is_refused(root):
    intermediate = root.intermediate()
    sbc = credentials(intermediate, dns("sbc.example.com"), [root.certificate])
    trunk = credentials(root, dns("trunk.example.com"), [root.certificate])

    assert "chain" in assert_refused_by_responder(*cert_pair(sbc, trunk))


def test_identity_not_in_the_certificate_is_refused(root):
    sbc = credentials(root, dns("other.example.com"), [root.certificate])
    trunk = credentials(root, dns("trunk.example.com"), [root.certificate])

    reason = assert_refused_by_responder(*cert_pair(sbc, trunk))

    assert "subjectAltName" in reason


def test_expired_certificate_is_refused(root):
    expired = {"not_before": NOW - 30 * DAY, "not_after": NOW - DAY}
    sbc = credentials(root, dns("sbc.example.com"), [root.certificate], **expired)
    trunk = credentials(root, dns("trunk.example.com"), [root.certificate])

    assert "chain" in assert_refused_by_responder(*cert_pair(sbc, trunk))


def test_responder_certificate_refused_by_the_initiator(root):
    stranger = Authority.root("Stranger CA")
    sbc = credentials(root, dns("sbc.example.com"), [root.certificate])
    trunk = credentials(stranger, dns("trunk.example.com"), [root.certificate])

    initiator, responder = cert_pair(sbc, trunk)
    i_events, _ = run_handshake(initiator, responder)

    assert initiator.state is IkeSaState.FAILED
    assert "chain" in failure(i_events).reason


def test_psk_where_a_certificate_is_required_is_refused(root):
    from ipsec.ike.keymat import PresharedKey

    trunk = credentials(root, dns("trunk.example.com"), [root.certificate])
    psk = PresharedKey(b"a shared secret")
    initiator = IkeSa(
        make_config(SBC_ID, TRUNK_ID, psk=psk, certificates=None),
        is_initiator=True,
        local_spi=bytes.fromhex("1111111111111111"),
        random_bytes=seeded(3),
    )
    responder = IkeSa(
        make_config(TRUNK_ID, SBC_ID, psk=psk, certificates=trunk),
        is_initiator=False,
        local_spi=bytes.fromhex("2222222222222222"),
        random_bytes=seeded(4),
    )

    assert "PSK" in assert_refused_by_responder(initiator, responder)


# ---------------------------------------------------------------------------
# Signatures and identities, method by method


OCTETS = b"InitiatorSignedOctets stand-in"


@pytest.mark.parametrize(
    ("kind", "peer_hashes", "method"),
    [
        ("rsa", frozenset(), AuthMethod.RSA_DIGITAL_SIGNATURE),
        ("p256", frozenset(), AuthMethod.ECDSA_SHA256_P256),
        ("p384", frozenset(), AuthMethod.ECDSA_SHA384_P384),
        ("rsa", frozenset({HashAlgorithm.SHA2_512}), AuthMethod.DIGITAL_SIGNATURE),
        ("p256", frozenset({HashAlgorithm.SHA2_256}), AuthMethod.DIGITAL_SIGNATURE),
        ("p384", frozenset({HashAlgorithm.SHA2_384}), AuthMethod.DIGITAL_SIGNATURE),
        ("ed25519", frozenset({HashAlgorithm.IDENTITY}), AuthMethod.DIGITAL_SIGNATURE),
    ],
)
def test_signature_round_trip_per_method(root, kind, peer_hashes, method):
    certificate, key = root.end_entity(dns("sbc.example.com"), kind)

    auth = sign_auth(key, OCTETS, peer_hashes)
    verify_auth(certificate, auth, OCTETS)

    assert auth.auth_method == method
    tampered = bytearray(auth.authentication_data)
    tampered[-1] ^= 0x01
    with pytest.raises(AuthenticationFailed):
        verify_auth(certificate, AuthPayload(method, bytes(tampered)), OCTETS)
    with pytest.raises(AuthenticationFailed):
        verify_auth(certificate, auth, OCTETS + b"x")


def test_rsa_method_1_is_pkcs1_sha1_as_an_independent_check_sees_it(root):
    from cryptography.hazmat.primitives.asymmetric import padding

    certificate, key = root.end_entity(dns("sbc.example.com"), "rsa")

    auth = sign_auth(key, OCTETS, frozenset())

    certificate.public_key().verify(
        auth.authentication_data, OCTETS, padding.PKCS1v15(), hashes.SHA1()
    )


def test_rfc7427_data_starts_with_the_algorithm_identifier(root):
    _, key = root.end_entity(dns("sbc.example.com"), "p256")

    auth = sign_auth(key, OCTETS, frozenset({HashAlgorithm.SHA2_256}))

    # RFC 7427 Appendix A.3.1: ecdsa-with-SHA256.
    blob = bytes.fromhex("300a06082a8648ce3d040302")
    assert auth.authentication_data[: 1 + len(blob)] == bytes((len(blob),)) + blob


def test_rsa_pss_identifier_matches_rfc7427_appendix():
    [pss] = [
        s
        for s in SIGNATURE_SCHEMES
        if s.kind is SignatureKind.RSA_PSS and s.hash_id is HashAlgorithm.SHA2_256
    ]

    # RFC 7427 Appendix A.4.1 (RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32).
    assert pss.algorithm_identifier == bytes.fromhex(
        "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c"
        "301a06092a864886f70d010108300d06096086480165030402010500a203020120"
    )


def test_signature_with_another_key_type_is_refused(root):
    rsa_certificate, _ = root.end_entity(dns("sbc.example.com"), "rsa")
    _, ec_key = root.end_entity(dns("sbc.example.com"), "p256")

    auth = sign_auth(ec_key, OCTETS, frozenset({HashAlgorithm.SHA2_256}))

    with pytest.raises(AuthenticationFailed):
        verify_auth(rsa_certificate, auth, OCTETS)


def test_no_common_hash_falls_back_to_the_classic_method(root):
    certificate, key = root.end_entity(dns("sbc.example.com"), "p256")

    auth = sign_auth(key, OCTETS, frozenset({HashAlgorithm.SHA1}))

    assert auth.auth_method == AuthMethod.ECDSA_SHA256_P256
    verify_auth(certificate, auth, OCTETS)


def test_peer_key_on_an_unsupported_curve_is_refused(root):
    certificate, key = root.end_entity(dns("sbc.example.com"), "k256")
    auth = sign_auth(key, OCTETS, frozenset({HashAlgorithm.SHA2_256}))

    with pytest.raises(AuthenticationFailed, match="secp256k1"):
        verify_auth(certificate, auth, OCTETS)


def test_key_on_an_unsupported_curve_is_refused_at_configuration(root):
    key = ec.generate_private_key(ec.SECP256K1())

    with pytest.raises(ValueError, match="secp256k1"):
        LocalCertificate(root.certificate, key)


@pytest.mark.parametrize(
    ("id_type", "data", "matches"),
    [
        (IdType.ID_FQDN, b"SBC.example.com", True),
        (IdType.ID_FQDN, b"trunk.example.com", False),
        (IdType.ID_RFC822_ADDR, b"ops@example.com", True),
        (IdType.ID_IPV4_ADDR, IPv4Address("192.0.2.7").packed, True),
        (IdType.ID_IPV4_ADDR, IPv4Address("192.0.2.8").packed, False),
        (IdType.ID_IPV6_ADDR, IPv6Address("2001:db8::7").packed, True),
        (IdType.ID_KEY_ID, b"opaque", False),
    ],
)
def test_identity_bound_to_subject_alt_names(root, id_type, data, matches):
    names = [
        x509.DNSName("sbc.example.com"),
        x509.RFC822Name("ops@example.com"),
        x509.IPAddress(IPv4Address("192.0.2.7")),
        x509.IPAddress(IPv6Address("2001:db8::7")),
    ]
    certificate, _ = root.end_entity(names)

    if matches:
        check_identity(certificate, IdPayload(id_type, data))
    else:
        with pytest.raises(AuthenticationFailed):
            check_identity(certificate, IdPayload(id_type, data))


def test_distinguished_name_identity_handshake(root):
    certificate, key = root.end_entity(dns("sbc.example.com"), common_name="sbc-dn")
    dn_id = Identity(IdType.ID_DER_ASN1_DN, certificate.subject.public_bytes())
    sbc = CertificateAuthentication(
        LocalCertificate(certificate, key), (root.certificate,), lambda: NOW
    )
    trunk = credentials(root, dns("trunk.example.com"), [root.certificate])
    initiator = IkeSa(
        make_config(dn_id, TRUNK_ID, psk=None, certificates=sbc),
        is_initiator=True,
        local_spi=bytes.fromhex("1111111111111111"),
        random_bytes=seeded(5),
    )
    responder = IkeSa(
        make_config(TRUNK_ID, dn_id, psk=None, certificates=trunk),
        is_initiator=False,
        local_spi=bytes.fromhex("2222222222222222"),
        random_bytes=seeded(6),
    )

    run_handshake(initiator, responder)

    assert initiator.state is responder.state is IkeSaState.ESTABLISHED
    with pytest.raises(AuthenticationFailed):
        check_identity(certificate, IdPayload(IdType.ID_DER_ASN1_DN, b"0\x00"))


def test_private_key_never_printed(root):
    sbc = credentials(root, dns("sbc.example.com"), [root.certificate])

    assert "private_key" not in repr(sbc.local)
    assert "PrivateKey" not in repr(sbc)


def test_configuration_without_psk_needs_certificate_and_cas(root):
    own = credentials(root, dns("sbc.example.com"), [])
    anchors_only = CertificateAuthentication(None, (root.certificate,))

    for certificates in (None, own, anchors_only):
        with pytest.raises(ValueError, match="PSK"):
            make_config(SBC_ID, TRUNK_ID, psk=None, certificates=certificates)


# ---------------------------------------------------------------------------
# Attacker-chosen input: AUTHENTICATION_FAILED and nothing else


@settings(max_examples=150, deadline=None)
@given(
    cert_data=st.binary(max_size=600),
    auth_method=st.sampled_from([1, 9, 10, 11, 14, 2, 200]),
    auth_data=st.binary(max_size=300),
)
def test_arbitrary_cert_and_auth_payloads_only_fail_authentication(
    fuzz_pki, cert_data, auth_method, auth_data
):
    root_certificate, good_cert = fuzz_pki
    authentication = CertificateAuthentication(None, (root_certificate,), lambda: NOW)
    identity = SBC_ID.as_idi()
    auth = AuthPayload(auth_method, auth_data)

    for data in (cert_data, good_cert):
        payloads = [CertPayload(CertEncoding.X509_SIGNATURE, data)]
        with pytest.raises(AuthenticationFailed):
            authenticate_peer(payloads, identity, auth, OCTETS, authentication)


@pytest.fixture(scope="module")
def fuzz_pki(root):
    certificate, _ = root.end_entity(dns("sbc.example.com"), "p256")
    return root.certificate, certificate.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------
# Configuration from PEM text


def pem_of(*certificates):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def test_credentials_from_pem_establish(root):
    intermediate = root.intermediate()
    certificate, key = intermediate.end_entity(dns("sbc.example.com"))
    password = b"key passphrase"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )

    loaded = CertificateAuthentication.from_pem(
        certificate=pem_of(certificate),
        private_key=key_pem,
        intermediates=pem_of(intermediate.certificate),
        trust_anchors=pem_of(root.certificate, intermediate.certificate),
        password=password,
    )
    sbc = replace(loaded, validation_time=lambda: NOW)
    trunk = credentials(root, dns("trunk.example.com"), [root.certificate])
    initiator, responder = cert_pair(sbc, trunk)
    run_handshake(initiator, responder)

    assert len(loaded.trust_anchors) == 2
    assert loaded.local.intermediates == (intermediate.certificate,)
    assert initiator.state is responder.state is IkeSaState.ESTABLISHED


@pytest.mark.parametrize("problem", ["wrong-password", "no-password", "dsa-key"])
def test_credentials_from_pem_refuse_what_cannot_sign(root, problem):
    from cryptography.hazmat.primitives.asymmetric import dsa

    certificate, key = root.end_entity(dns("sbc.example.com"))
    encryption = serialization.BestAvailableEncryption(b"right")
    password = b"wrong"
    if problem == "no-password":
        password = None
    if problem == "dsa-key":
        key, encryption, password = dsa.generate_private_key(2048), None, None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )

    with pytest.raises(ValueError):
        CertificateAuthentication.from_pem(
            certificate=pem_of(certificate), private_key=key_pem, password=password
        )
