"""Sample IKEv2 messages and keys shared by the IKE tests."""

from ipaddress import IPv4Address, IPv6Address

from ipsec.ike.constants import (
    AuthMethod,
    CertEncoding,
    CfgType,
    ConfigAttributeType,
    DhGroup,
    EncrId,
    EsnId,
    ExchangeType,
    IdType,
    IntegId,
    NotifyType,
    PrfId,
    ProtocolId,
    TransformType,
)
from ipsec.ike.crypto import SkCipher, encr_algorithm, integ_algorithm
from ipsec.ike.message import IkeMessage
from ipsec.ike.payloads import (
    AuthPayload,
    CertReqPayload,
    ConfigAttribute,
    CpPayload,
    DeletePayload,
    IdiPayload,
    IdrPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsiPayload,
    TsrPayload,
    VendorIdPayload,
)

SPI_I = bytes.fromhex("a1a2a3a4a5a6a7a8")
SPI_R = bytes.fromhex("b1b2b3b4b5b6b7b8")
NONCE_I = bytes(range(0x10, 0x30))
KE_DATA = bytes(range(64))
NAT_SOURCE_HASH = bytes.fromhex("11" * 20)
NAT_DESTINATION_HASH = bytes.fromhex("22" * 20)


def ike_proposals():
    gcm = Proposal(
        1,
        ProtocolId.IKE,
        (
            Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 256),
            Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
            Transform(TransformType.DH, DhGroup.ECP_256),
            Transform(TransformType.DH, DhGroup.CURVE25519),
        ),
    )
    cbc = Proposal(
        2,
        ProtocolId.IKE,
        (
            Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 128),
            Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128),
            Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_384),
            Transform(TransformType.DH, DhGroup.MODP_2048),
        ),
    )
    return gcm, cbc


def ike_sa_init_request():
    """IKE_SA_INIT as charon sends it: SA, KE, Ni, NAT-D, fragmentation."""
    return IkeMessage(
        ExchangeType.IKE_SA_INIT,
        0,
        SPI_I,
        payloads=(
            SaPayload(ike_proposals()),
            KePayload(DhGroup.ECP_256, KE_DATA),
            NoncePayload(NONCE_I),
            NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, NAT_SOURCE_HASH),
            NotifyPayload(
                NotifyType.NAT_DETECTION_DESTINATION_IP, NAT_DESTINATION_HASH
            ),
            NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
            VendorIdPayload(b"secure-sbc"),
        ),
    )


ESP_SPI = bytes.fromhex("c0ffee01")


def esp_proposal(spi=ESP_SPI):
    return Proposal(
        1,
        ProtocolId.ESP,
        (
            Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 128),
            Transform(TransformType.ESN, EsnId.NO_ESN),
            Transform(TransformType.ESN, EsnId.ESN),
        ),
        spi,
    )


def ike_auth_payloads():
    """The inner payloads of an IKE_AUTH request with a PSK."""
    return (
        IdiPayload(IdType.ID_FQDN, b"sbc.example.com"),
        NotifyPayload(NotifyType.INITIAL_CONTACT),
        CertReqPayload(CertEncoding.X509_SIGNATURE, bytes(20)),
        IdrPayload(IdType.ID_IPV4_ADDR, IPv4Address("192.0.2.1").packed),
        AuthPayload(AuthMethod.SHARED_KEY_MIC, bytes(range(32))),
        CpPayload(
            CfgType.CFG_REQUEST,
            (ConfigAttribute(ConfigAttributeType.INTERNAL_IP4_ADDRESS),),
        ),
        SaPayload((esp_proposal(),)),
        TsiPayload(
            (
                TrafficSelector(
                    IPv4Address("192.0.2.50"),
                    IPv4Address("192.0.2.250"),
                    17,
                    5060,
                    5061,
                ),
            )
        ),
        TsrPayload(
            (
                TrafficSelector(
                    IPv6Address("2001:db8::"), IPv6Address("2001:db8::ffff")
                ),
                TrafficSelector(IPv4Address("0.0.0.0"), IPv4Address("255.255.255.255")),
            )
        ),
        NotifyPayload(NotifyType.MOBIKE_SUPPORTED),
        DeletePayload(ProtocolId.ESP, (bytes.fromhex("01020304"), bytes(4))),
    )


def ike_auth_request(payloads=None):
    return IkeMessage(
        ExchangeType.IKE_AUTH,
        1,
        SPI_I,
        SPI_R,
        payloads=ike_auth_payloads() if payloads is None else payloads,
    )


def cipher(encr_id, key_length, integ_id=None, seed=0x40):
    """An SkCipher with deterministic keys (one byte counting up from seed)."""
    encr = encr_algorithm(encr_id, key_length)
    integ = integ_algorithm(integ_id) if integ_id is not None else None
    encryption_key = bytes((seed + i) % 256 for i in range(encr.key_size))
    integrity_key = bytes(
        (seed + 0x80 + i) % 256 for i in range(integ.key_size if integ else 0)
    )
    return SkCipher(encr, integ, encryption_key, integrity_key)


SUITES = {
    "aes-gcm-128": (EncrId.ENCR_AES_GCM_16, 128, None),
    "aes-gcm-256": (EncrId.ENCR_AES_GCM_16, 256, None),
    "chacha20-poly1305": (EncrId.ENCR_CHACHA20_POLY1305, None, None),
    "aes-cbc-128-sha256": (EncrId.ENCR_AES_CBC, 128, IntegId.AUTH_HMAC_SHA2_256_128),
    "aes-cbc-256-sha384": (EncrId.ENCR_AES_CBC, 256, IntegId.AUTH_HMAC_SHA2_384_192),
    "aes-cbc-192-sha512": (EncrId.ENCR_AES_CBC, 192, IntegId.AUTH_HMAC_SHA2_512_256),
}


class CountingRandom:
    """Deterministic randomness: successive bytes of a counter."""

    def __init__(self, start=0):
        self.next = start

    def __call__(self, size):
        out = bytes((self.next + i) % 256 for i in range(size))
        self.next += size
        return out
