"""Connection definitions: strongSwan proposal strings and CHILD_SA installation."""

from ipaddress import IPv4Address

import pytest

from ipsec.esp import Encryption, Integrity, Mode
from ipsec.ike.connection import (
    ChildDefinition,
    child_sa_installation,
    parse_proposal,
    parse_proposals,
    traffic_selector,
)
from ipsec.ike.constants import (
    DhGroup,
    EncrId,
    EsnId,
    IntegId,
    PrfId,
    ProtocolId,
    TransformType,
)
from ipsec.ike.payloads import Proposal, Transform
from ipsec.ike.proposals import select_proposal

from .test_ike_sa import esp_proposal, establish


def transforms(proposal):
    return [
        (t.transform_type, t.transform_id, t.key_length) for t in proposal.transforms
    ]


def test_parse_ike_proposal_aead_with_prf_and_group():
    proposal = parse_proposal("aes128gcm16-prfsha256-x25519", ProtocolId.IKE)

    assert proposal.protocol_id == ProtocolId.IKE
    assert transforms(proposal) == [
        (TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 128),
        (TransformType.PRF, PrfId.PRF_HMAC_SHA2_256, None),
        (TransformType.DH, DhGroup.CURVE25519, None),
    ]


def test_parse_ike_proposal_takes_prf_from_integrity_in_strongswan_order():
    proposal = parse_proposal("aes256-modp2048-sha384", ProtocolId.IKE)

    assert transforms(proposal) == [
        (TransformType.ENCR, EncrId.ENCR_AES_CBC, 256),
        (TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_384_192, None),
        (TransformType.PRF, PrfId.PRF_HMAC_SHA2_384, None),
        (TransformType.DH, DhGroup.MODP_2048, None),
    ]


def test_parse_esp_proposal_defaults_to_no_esn():
    [plain, extended] = parse_proposals(
        ["aes256-sha256", "aes128gcm16-esn"], ProtocolId.ESP
    )

    assert (plain.number, extended.number) == (1, 2)
    assert transforms(plain)[-1] == (TransformType.ESN, EsnId.NO_ESN, None)
    assert transforms(extended)[-1] == (TransformType.ESN, EsnId.ESN, None)


@pytest.mark.parametrize(
    ("text", "protocol"),
    [
        ("aes128gcm16-prfsha256", ProtocolId.IKE),  # no DH group
        ("aes128-x25519", ProtocolId.IKE),  # neither PRF nor integrity
        ("sha256-x25519", ProtocolId.IKE),  # no encryption
        ("aes128-md5", ProtocolId.ESP),  # unknown keyword
        ("aes128gcm16-prfsha256", ProtocolId.ESP),  # PRF in ESP
        ("aes128gcm16-esn-x25519-prfsha256", ProtocolId.IKE),  # ESN in IKE
    ],
)
def test_parse_proposal_rejects_incomplete_or_unknown_variant(text, protocol):
    with pytest.raises(ValueError):
        parse_proposal(text, protocol)


def test_parsed_proposal_matches_charon_wire_order():
    # charon sends ENCR, INTEG, PRF, DH; the responder compares type order.
    charon = Proposal(
        1,
        ProtocolId.IKE,
        (
            Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 256),
            Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128),
            Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
            Transform(TransformType.DH, DhGroup.MODP_2048),
        ),
    )
    ours = parse_proposal("aes256-sha256-modp2048", ProtocolId.IKE)

    assert select_proposal([charon], [ours]) == charon


def test_child_sa_installation_pairs_spis_keys_and_tunnel_addresses():
    initiator, responder = establish(
        initiator_changes={
            "esp_proposals": (esp_proposal(encr=(EncrId.ENCR_AES_CBC, 256)),)
        },
        responder_changes={
            "esp_proposals": (esp_proposal(encr=(EncrId.ENCR_AES_CBC, 256)),)
        },
    )
    child = list(iter(initiator.next_event, None))[1]
    definition = ChildDefinition(
        "sip",
        (traffic_selector("10.1.0.0/24"),),
        (traffic_selector("10.2.0.0/24"),),
        (),
    )
    local, remote = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")

    installation = child_sa_installation(child, definition, local, remote)

    outbound, inbound = installation.outbound, installation.inbound
    assert outbound.spi == int.from_bytes(child.outbound_spi, "big")
    assert inbound.spi == int.from_bytes(child.inbound_spi, "big")
    assert (outbound.encryption_key, outbound.integrity_key) == child.outbound_keys
    assert (inbound.encryption_key, inbound.integrity_key) == child.inbound_keys
    assert outbound.encryption is Encryption.AES_CBC_256
    assert outbound.integrity is Integrity.HMAC_SHA2_256_128
    assert outbound.mode is inbound.mode is Mode.TUNNEL
    assert (outbound.tunnel_source, outbound.tunnel_destination) == (local, remote)
    assert (inbound.tunnel_source, inbound.tunnel_destination) == (remote, local)
    assert str(installation.local_selectors[0].start_address) == "0.0.0.0"
