"""Proposal selection and the responder's choice as the initiator checks it."""

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
from ipsec.ike.payloads import Proposal, Transform, TransformAttribute
from ipsec.ike.proposals import (
    check_selected,
    child_suite,
    dh_groups,
    ike_suite,
    select_proposal,
)

GCM = Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 256)
CBC = Transform(TransformType.ENCR, EncrId.ENCR_AES_CBC, 128)
SHA256 = Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256)
HMAC = Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128)
X25519 = Transform(TransformType.DH, DhGroup.CURVE25519)
P256 = Transform(TransformType.DH, DhGroup.ECP_256)
ESN = Transform(TransformType.ESN, EsnId.ESN)
NO_ESN = Transform(TransformType.ESN, EsnId.NO_ESN)


def ike(number, *transforms):
    return Proposal(number, ProtocolId.IKE, transforms)


def test_first_acceptable_transform_per_type_chosen():
    offered = [ike(1, CBC, GCM, HMAC, SHA256, P256, X25519)]
    configured = [ike(1, GCM, CBC, HMAC, SHA256, X25519, P256)]

    chosen = select_proposal(offered, configured)

    # The offer's order decides within a proposal.
    assert chosen == ike(1, CBC, HMAC, SHA256, P256)


def test_ke_group_preferred_among_acceptable_groups():
    offered = [ike(1, GCM, SHA256, P256, X25519)]

    chosen = select_proposal(
        offered, [ike(1, GCM, SHA256, P256, X25519)], DhGroup.CURVE25519
    )

    assert X25519 in chosen.transforms and P256 not in chosen.transforms


def test_our_proposal_order_decides_between_proposals():
    offered = [ike(1, CBC, HMAC, SHA256, X25519), ike(2, GCM, SHA256, X25519)]
    configured = [ike(1, GCM, SHA256, X25519), ike(2, CBC, HMAC, SHA256, X25519)]

    assert select_proposal(offered, configured).number == 2


def test_transform_with_unknown_attribute_never_chosen():
    odd = Transform(
        TransformType.ENCR,
        EncrId.ENCR_AES_GCM_16,
        256,
        (TransformAttribute(99, b"\x00\x01", True),),
    )

    with pytest.raises(NoProposalChosen):
        select_proposal([ike(1, odd, SHA256, X25519)], [ike(1, GCM, SHA256, X25519)])


def test_missing_transform_type_is_no_match():
    with pytest.raises(NoProposalChosen):
        select_proposal([ike(1, GCM, SHA256)], [ike(1, GCM, SHA256, X25519)])


def test_key_length_must_match():
    gcm_128 = Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 128)

    with pytest.raises(NoProposalChosen):
        select_proposal(
            [ike(1, gcm_128, SHA256, X25519)], [ike(1, GCM, SHA256, X25519)]
        )


@pytest.mark.parametrize(
    "answer",
    [
        ike(3, GCM, SHA256, X25519),  # proposal number never offered
        ike(1, GCM, SHA256),  # a transform type missing
        ike(1, GCM, SHA256, X25519, P256),  # two DH groups
        ike(1, CBC, SHA256, X25519),  # a transform not offered
        Proposal(1, ProtocolId.ESP, (GCM, SHA256, X25519)),
    ],
)
def test_responder_choice_checked(answer):
    with pytest.raises(NoProposalChosen):
        check_selected(answer, [ike(1, GCM, SHA256, X25519, P256)])


def test_suites_from_selected_proposals():
    suite = ike_suite(ike(1, CBC, HMAC, SHA256, P256))
    child = child_suite(Proposal(1, ProtocolId.ESP, (GCM, ESN), b"\x00\x00\x01\x00"))

    assert (suite.transforms.encr.key_size, suite.transforms.integ.icv_size) == (16, 16)
    assert suite.dh_group == DhGroup.ECP_256
    assert (child.encr.encr_id, child.integ, child.esn) == (
        EncrId.ENCR_AES_GCM_16,
        None,
        True,
    )


def test_aead_with_integrity_refused():
    with pytest.raises(NoProposalChosen):
        ike_suite(ike(1, GCM, HMAC, SHA256, X25519))


def test_cbc_without_integrity_refused():
    with pytest.raises(NoProposalChosen):
        child_suite(Proposal(1, ProtocolId.ESP, (CBC, NO_ESN), b"\x00\x00\x01\x00"))


def test_dh_groups_listed():
    assert dh_groups(
        [ike(1, GCM, SHA256, X25519), ike(2, CBC, HMAC, SHA256, P256)]
    ) == {31, 19}
