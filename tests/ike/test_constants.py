"""The IANA numbers, checked against scapy's independent IKEv2 tables."""

import pytest
from scapy.contrib import ikev2 as scapy_ikev2

from ipsec.ike.constants import (
    AuthMethod,
    CfgType,
    DhGroup,
    EncrId,
    EsnId,
    ExchangeType,
    IntegId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
    TsType,
)

# Our RFC spelling -> scapy's label for the same number.
PAYLOAD_LABELS = {
    PayloadType.SA: "SA",
    PayloadType.KE: "KE",
    PayloadType.IDi: "IDi",
    PayloadType.IDr: "IDr",
    PayloadType.CERT: "CERT",
    PayloadType.CERTREQ: "CERTREQ",
    PayloadType.AUTH: "AUTH",
    PayloadType.NONCE: "Nonce",
    PayloadType.NOTIFY: "Notify",
    PayloadType.DELETE: "Delete",
    PayloadType.VENDOR_ID: "VendorID",
    PayloadType.TSi: "TSi",
    PayloadType.TSr: "TSr",
    PayloadType.SK: "Encrypted",
    PayloadType.CP: "CP",
    PayloadType.EAP: "EAP",
    PayloadType.SKF: "Encrypted_Fragment",
}

TRANSFORM_LABELS = [
    (TransformType.ENCR, EncrId.ENCR_AES_CBC, "AES-CBC"),
    (TransformType.ENCR, EncrId.ENCR_AES_GCM_16, "AES-GCM-16ICV"),
    (TransformType.ENCR, EncrId.ENCR_CHACHA20_POLY1305, "ChaCha20-Poly1305"),
    (TransformType.PRF, PrfId.PRF_HMAC_SHA2_256, "PRF_HMAC_SHA2_256"),
    (TransformType.PRF, PrfId.PRF_HMAC_SHA2_384, "PRF_HMAC_SHA2_384"),
    (TransformType.PRF, PrfId.PRF_HMAC_SHA2_512, "PRF_HMAC_SHA2_512"),
    (TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128, "SHA2-256-128"),
    (TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_384_192, "SHA2-384-192"),
    (TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_512_256, "SHA2-512-256"),
    (TransformType.DH, DhGroup.MODP_2048, "2048MODPgr"),
    (TransformType.DH, DhGroup.MODP_3072, "3072MODPgr"),
    (TransformType.DH, DhGroup.MODP_4096, "4096MODPgr"),
    (TransformType.DH, DhGroup.ECP_256, "256randECPgr"),
    (TransformType.DH, DhGroup.ECP_384, "384randECPgr"),
    (TransformType.DH, DhGroup.ECP_521, "521randECPgr"),
    (TransformType.DH, DhGroup.CURVE25519, "curve25519gr"),
    (TransformType.DH, DhGroup.CURVE448, "curve448gr"),
    (TransformType.ESN, EsnId.NO_ESN, "No ESN"),
    (TransformType.ESN, EsnId.ESN, "ESN"),
]


@pytest.mark.parametrize("payload_type", list(PAYLOAD_LABELS))
def test_payload_type_matches_scapy(payload_type):
    assert scapy_ikev2.IKEv2PayloadTypes[payload_type] == PAYLOAD_LABELS[payload_type]


@pytest.mark.parametrize(("transform_type", "transform_id", "label"), TRANSFORM_LABELS)
def test_transform_id_matches_scapy(transform_type, transform_id, label):
    assert scapy_ikev2.IKEv2TransformAlgorithms[transform_type][transform_id] == label


def test_transform_types_match_scapy():
    # scapy keys this table by label.
    assert scapy_ikev2.IKEv2TransformTypes == {
        "Encryption": TransformType.ENCR,
        "PRF": TransformType.PRF,
        "Integrity": TransformType.INTEG,
        "GroupDesc": TransformType.DH,
        "Extended Sequence Number": TransformType.ESN,
    }


@pytest.mark.parametrize("notify_type", list(NotifyType))
def test_notify_type_matches_scapy(notify_type):
    assert scapy_ikev2.IKEv2NotifyMessageTypes[notify_type] == notify_type.name


@pytest.mark.parametrize("exchange_type", list(ExchangeType))
def test_exchange_type_matches_scapy(exchange_type):
    assert scapy_ikev2.IKEv2ExchangeTypes[exchange_type] == exchange_type.name


def test_small_registries_match_scapy():
    assert {p.value: p.name for p in ProtocolId if p} == {1: "IKE", 2: "AH", 3: "ESP"}
    assert {p.value: p.name for p in ProtocolId if p} == scapy_ikev2.IKEv2ProtocolTypes
    assert {t: t.name for t in TsType} == {
        k: v for k, v in scapy_ikev2.IKEv2TrafficSelectorTypes.items() if k in (7, 8)
    }
    assert {c: c.name for c in CfgType} == scapy_ikev2.IKEv2ConfigurationPayloadCFGTypes
    assert scapy_ikev2.IKEv2AuthenticationTypes[AuthMethod.SHARED_KEY_MIC] == (
        "Shared Key Message Integrity Code"
    )


def test_notify_error_split_at_16384():
    assert NotifyType.INVALID_SYNTAX.is_error
    assert not NotifyType.COOKIE.is_error
