"""Certificate authentication against strongSwan's charon, with fragments.

The PKI (a root CA and one ECDSA end-entity certificate per side) is made
here with ``cryptography``; charon gets its certificate, its key and the CA
by absolute path in swanctl.conf. charon signs with RFC 7427 Digital
Signature since we announce SIGNATURE_HASH_ALGORITHMS, and sends its
certificate because we send CERTREQ. Our IKE_AUTH, carrying a certificate,
exceeds the IPv4 default of 576 octets and leaves as SKF fragments; charon
is set to fragment at 576 as well, so each side reassembles the other's.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from charon import Charon, CharonConnection
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ike.test_certificates import Authority
from netns import Lab, veth_lab
from peer_tools import require_root, require_tool
from test_charon import (
    CHARON_ADDRESS,
    CHARON_ID,
    CHARON_INNER,
    CHARON_NET,
    OUR_ADDRESS,
    OUR_ID,
    OUR_NET,
    OurNode,
    check_traffic,
    inside,
    run,
    until,
)

from ipsec.ike.certificates import CertificateAuthentication, LocalCertificate
from ipsec.ike.config import Identity
from ipsec.ike.connection import (
    ChildDefinition,
    ConnectionDefinition,
    StartAction,
    parse_proposal,
    traffic_selector,
)
from ipsec.ike.constants import IdType, ProtocolId
from ipsec.ike.daemon import ChildSaInstalled, IkeSaDown, IkeSaUp

SUITE = ("aes128gcm16-prfsha256-ecp256", "aes128gcm16")
DAY = datetime.timedelta(days=1)
CREDENTIAL_FOLDERS = (
    "x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl",
    "pubkey", "private", "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12",
)  # fmt: skip


class CertCharon(Charon):
    """charon that fragments its own IKE messages at 576 octets, and writes
    each log line at once so that the test can read what it did."""

    def _strongswan_conf(self) -> str:
        conf = super()._strongswan_conf()
        conf = conf.replace("default = 1", "default = 1\n      flush_line = yes", 1)
        return conf.replace("charon {", "charon {\n  fragment_size = 576", 1)


class CertCharonConnection(CharonConnection):
    """A swanctl connection authenticated with certificates on both sides."""

    def __init__(self, **fields) -> None:
        super().__init__(psk="", **fields)

    def render(self) -> str:
        text = super().render()
        text = text.replace(
            "auth = psk\n      id = " + self.local_id,
            f"auth = pubkey\n      id = {self.local_id}\n      certs = charon.pem",
        ).replace(
            "auth = psk\n      id = " + self.remote_id,
            f"auth = pubkey\n      id = {self.remote_id}\n      cacerts = ca.pem",
        )
        # No secrets: the unencrypted key is read from the ecdsa folder.
        return text[: text.index("secrets {")]


@pytest.fixture
def cert_lab(tmp_path) -> Iterator[tuple[Lab, Charon]]:
    require_root("network namespaces, TUN devices and a private /run for charon")
    require_tool("charon", "strongswan-charon")
    require_tool("swanctl", "strongswan-swanctl")
    require_tool("ping", "iputils-ping")
    with veth_lab("192.0.2") as lab:
        lab.b.add_loopback_address(CHARON_INNER)
        charon = CertCharon(lab.b, tmp_path)
        try:
            charon.start()
            yield lab, charon
        finally:
            charon.stop()


def make_pki(directory, kind):
    """Root CA, charon's and our certificates; charon's files on disk."""
    now = datetime.datetime.now(datetime.UTC)
    validity = {"not_before": now - DAY, "not_after": now + 30 * DAY}
    root = Authority.root("Interop Root CA", kind)
    charon_names = [x509.DNSName(CHARON_ID)]
    charon_cert, charon_key = root.end_entity(charon_names, kind, "charon", **validity)
    our_names = [x509.DNSName(OUR_ID)]
    our_cert, our_key = root.end_entity(our_names, kind, "sbc", **validity)

    pem = serialization.Encoding.PEM
    # swanctl --file reads credentials from folders beside that file.
    swanctl = directory
    for folder in CREDENTIAL_FOLDERS:
        (swanctl / folder).mkdir(parents=True, exist_ok=True)
    (swanctl / "x509ca" / "ca.pem").write_bytes(root.certificate.public_bytes(pem))
    (swanctl / "x509" / "charon.pem").write_bytes(charon_cert.public_bytes(pem))
    key_file = swanctl / ("rsa" if kind == "rsa" else "ecdsa") / "charon.key"
    key_file.write_bytes(
        charon_key.private_bytes(
            pem,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return CertificateAuthentication(
        LocalCertificate(our_cert, our_key), (root.certificate,)
    )


def charon_connection(start_action="none"):
    ike, esp = SUITE
    return CertCharonConnection(
        local_addr=CHARON_ADDRESS, remote_addr=OUR_ADDRESS,
        local_id=CHARON_ID, remote_id=OUR_ID,
        local_ts=CHARON_NET, remote_ts=OUR_NET,
        proposals=ike, esp_proposals=esp, start_action=start_action,
    )  # fmt: skip


def our_connection(certificates, start_action=StartAction.NONE):
    ike, esp = SUITE
    child = ChildDefinition(
        "sip",
        (traffic_selector(OUR_NET),),
        (traffic_selector(CHARON_NET),),
        (parse_proposal(esp, ProtocolId.ESP),),
    )
    return ConnectionDefinition(
        name="charon",
        local_address=IPv4Address(OUR_ADDRESS),
        remote_address=IPv4Address(CHARON_ADDRESS),
        local_id=Identity(IdType.ID_FQDN, OUR_ID.encode()),
        remote_id=Identity(IdType.ID_FQDN, CHARON_ID.encode()),
        psk=None,
        ike_proposals=(parse_proposal(ike, ProtocolId.IKE),),
        child=child,
        start_action=start_action,
        encap=True,
        certificates=certificates,
    )


def fragment_lines(charon):
    log = charon.log.read_text(errors="replace")
    return (
        "splitting IKE message" in log,
        "reassembled fragmented IKE message" in log,
    )


@pytest.mark.peer("charon")
@pytest.mark.root
@pytest.mark.parametrize(
    "we_initiate", [True, False], ids=["we-initiate", "charon-initiates"]
)
@pytest.mark.parametrize(
    ("kind", "scheme"),
    [
        # The _DER scheme is RFC 7427's (method 14); RFC 4754 has no _DER.
        ("p256", "ECDSA_WITH_SHA256_DER"),
        ("rsa", "RSA_EMSA_PSS"),
    ],
)
def test_certificates_with_charon(cert_lab, tmp_path, we_initiate, kind, scheme):
    lab, charon = cert_lab
    certificates = make_pki(tmp_path, kind)
    charon.load(charon_connection())

    async def scenario():
        node = await OurNode.start()
        try:
            start = StartAction.START if we_initiate else StartAction.NONE
            node.daemon.load(our_connection(certificates, start))
            if not we_initiate:
                outcome = await asyncio.to_thread(charon.initiate)
                assert "initiate completed successfully" in outcome, outcome
            await until(lambda: node.of(ChildSaInstalled), 15, charon.tail())

            [up] = node.of(IkeSaUp)
            assert up.is_initiator is we_initiate
            assert not node.of(IkeSaDown)
            await check_traffic(lab, charon, node)
        finally:
            node.close()

    with inside(lab):
        run(scenario())

    log = charon.log.read_text(errors="replace")
    assert f"authentication of '{OUR_ID}' with {scheme}" in log, charon.tail()
    assert fragment_lines(charon) == (True, True), charon.tail()


@pytest.mark.peer("charon")
@pytest.mark.root
def test_charon_refuses_a_certificate_from_another_ca(cert_lab, tmp_path):
    lab, charon = cert_lab
    make_pki(tmp_path, "p256")
    charon.load(charon_connection())
    strangers = make_pki(tmp_path / "ours", "p256")

    async def scenario():
        node = await OurNode.start()
        try:
            node.daemon.load(our_connection(strangers, StartAction.START))
            await until(lambda: node.of(IkeSaDown), 15, "the IKE_SA to fail")

            assert not node.of(ChildSaInstalled)
            [down] = node.of(IkeSaDown)
            assert down.notify_type == 24  # AUTHENTICATION_FAILED
        finally:
            node.close()

    with inside(lab):
        run(scenario())
