"""Proposal matching ignores the order of transform types (RFC 7296 §3.3)."""

import itertools

import pytest

from ipsec.ike.constants import (
    DhGroup,
    EncrId,
    EsnId,
    IntegId,
    PrfId,
    ProtocolId,
    TransformType,
)
from ipsec.ike.errors import NoProposalChosen
from ipsec.ike.payloads import Proposal, Transform
from ipsec.ike.proposals import check_selected, select_proposal

CBC = Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 128)
SHA256 = Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256)
HMAC = Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128)
X25519 = Transform(TransformType.DH, DhGroup.CURVE25519)
ESN = Transform(TransformType.ESN, EsnId.NO_ESN)
IKE_TRANSFORMS = (CBC, SHA256, HMAC, X25519)


@pytest.mark.parametrize("order", list(itertools.permutations(IKE_TRANSFORMS)))
def test_ike_proposal_matches_reordered_types(order):
    offered = [Proposal(1, ProtocolId.IKE, order)]
    configured = [Proposal(1, ProtocolId.IKE, IKE_TRANSFORMS)]

    chosen = select_proposal(offered, configured)

    assert set(chosen.transforms) == set(IKE_TRANSFORMS)
    check_selected(chosen, offered)


def test_esp_proposal_matches_reordered_types_with_esn_first():
    offered = [Proposal(3, ProtocolId.ESP, (ESN, HMAC, CBC), b"\x01\x02\x03\x04")]
    configured = [Proposal(1, ProtocolId.ESP, (CBC, HMAC, ESN))]

    chosen = select_proposal(offered, configured)

    assert chosen.number == 3 and set(chosen.transforms) == {CBC, HMAC, ESN}


def test_reordered_proposal_missing_a_type_refused_variant():
    offered = [Proposal(1, ProtocolId.IKE, (X25519, SHA256, CBC))]
    configured = [Proposal(1, ProtocolId.IKE, IKE_TRANSFORMS)]

    with pytest.raises(NoProposalChosen):
        select_proposal(offered, configured)
