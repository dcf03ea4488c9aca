"""Proposal selection (RFC 7296 §2.7, §3.3.6) and the algorithms it yields.

The responder walks its own proposals in order of preference and takes the
first peer proposal that offers an acceptable transform for every transform
type, so local policy decides, as strongSwan does by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .constants import DhGroup, EsnId, ProtocolId, TransformType
from .crypto import (
    EncrAlgorithm,
    IntegAlgorithm,
    encr_algorithm,
    integ_algorithm,
    prf_algorithm,
)
from .errors import InvalidSyntax, NoProposalChosen
from .keymat import IkeSaTransforms
from .payloads import Proposal, Transform


def select_proposal(
    offered: Iterable[Proposal],
    configured: Iterable[Proposal],
    preferred_dh_group: int | None = None,
) -> Proposal:
    """Pick one transform per type from the first acceptable offered proposal.

    ``preferred_dh_group`` (the group of the peer's KE payload) wins among
    the acceptable groups, which avoids a needless INVALID_KE_PAYLOAD round.
    Returns the chosen proposal with the offered number and SPI.
    """
    offered = tuple(offered)
    for ours in configured:
        for theirs in offered:
            chosen = _match(theirs, ours, preferred_dh_group)
            if chosen is not None:
                return chosen
    raise NoProposalChosen("no offered proposal matches the configuration")


def _match(
    theirs: Proposal, ours: Proposal, preferred_dh: int | None
) -> Proposal | None:
    if theirs.protocol_id != ours.protocol_id:
        return None
    # RFC 7296 §3.3: transforms come in no particular order; compare the
    # sets of types, never their sequence.
    if set(_types(theirs.transforms)) != set(_types(ours.transforms)):
        return None
    chosen = []
    for transform_type in _types(ours.transforms):
        transform = _pick(theirs, ours, transform_type, preferred_dh)
        if transform is None:
            return None
        chosen.append(transform)
    return Proposal(theirs.number, theirs.protocol_id, tuple(chosen), theirs.spi)


def _types(transforms: Iterable[Transform]) -> list[int]:
    """Transform types in first-seen order, each once."""
    return list(dict.fromkeys(t.transform_type for t in transforms))


def _pick(
    theirs: Proposal, ours: Proposal, transform_type: int, preferred_dh: int | None
) -> Transform | None:
    # Transforms with attributes we do not know are never selected (§3.3.6).
    acceptable = {
        (t.transform_id, t.key_length)
        for t in ours.transforms
        if t.transform_type == transform_type
    }
    candidates = [
        t
        for t in theirs.transforms
        if t.transform_type == transform_type
        and not t.other_attributes
        and (t.transform_id, t.key_length) in acceptable
    ]
    for transform in candidates:
        if (
            transform_type == TransformType.DH
            and transform.transform_id == preferred_dh
        ):
            return transform
    return candidates[0] if candidates else None


def check_selected(selected: Proposal, offered: Iterable[Proposal]) -> None:
    """The initiator's check of the responder's choice (RFC 7296 §2.7).

    The answer must be one offered proposal, cut down to one transform per
    type, each of them offered in that proposal.
    """
    origin = next((p for p in offered if p.number == selected.number), None)
    if origin is None or origin.protocol_id != selected.protocol_id:
        raise NoProposalChosen(
            f"responder chose proposal {selected.number} not offered"
        )
    types = [t.transform_type for t in selected.transforms]
    if len(types) != len(set(types)) or set(types) != set(_types(origin.transforms)):
        raise NoProposalChosen("responder did not choose one transform per type")
    if any(t not in origin.transforms for t in selected.transforms):
        raise NoProposalChosen("responder chose a transform that was not offered")


def _single(proposal: Proposal, transform_type: TransformType) -> Transform | None:
    return next(
        (t for t in proposal.transforms if t.transform_type == transform_type), None
    )


@dataclass(frozen=True, slots=True)
class IkeSaSuite:
    transforms: IkeSaTransforms
    dh_group: DhGroup


def ike_suite(proposal: Proposal) -> IkeSaSuite:
    """Algorithms of a selected IKE proposal; AEAD must come without INTEG."""
    encr = _single(proposal, TransformType.ENCR)
    prf = _single(proposal, TransformType.PRF)
    dh = _single(proposal, TransformType.DH)
    if (
        encr is None
        or prf is None
        or dh is None
        or proposal.protocol_id != ProtocolId.IKE
    ):
        raise InvalidSyntax("IKE proposal lacks ENCR, PRF or DH")
    encryption = encr_algorithm(encr.transform_id, encr.key_length)
    integrity = _integrity(proposal, encryption)
    transforms = IkeSaTransforms(encryption, prf_algorithm(prf.transform_id), integrity)
    if dh.transform_id not in DhGroup._value2member_map_:
        raise NoProposalChosen(f"Diffie-Hellman group {dh.transform_id}")
    return IkeSaSuite(transforms, DhGroup(dh.transform_id))


@dataclass(frozen=True, slots=True)
class ChildSaSuite:
    encr: EncrAlgorithm
    integ: IntegAlgorithm | None
    esn: bool


def child_suite(proposal: Proposal) -> ChildSaSuite:
    """Algorithms of a selected ESP proposal (AH is not supported here)."""
    encr = _single(proposal, TransformType.ENCR)
    esn = _single(proposal, TransformType.ESN)
    if encr is None or proposal.protocol_id != ProtocolId.ESP:
        raise NoProposalChosen("only ESP with encryption is supported")
    encryption = encr_algorithm(encr.transform_id, encr.key_length)
    integrity = _integrity(proposal, encryption)
    return ChildSaSuite(
        encryption, integrity, esn is not None and esn.transform_id == EsnId.ESN
    )


def _integrity(proposal: Proposal, encryption: EncrAlgorithm) -> IntegAlgorithm | None:
    integ = _single(proposal, TransformType.INTEG)
    if encryption.is_aead:
        # RFC 5282 §8: with an AEAD cipher INTEG is absent or NONE.
        if integ is not None and integ.transform_id != 0:
            raise NoProposalChosen("integrity transform with an AEAD cipher")
        return None
    if integ is None:
        raise NoProposalChosen("non-AEAD cipher without integrity transform")
    return integ_algorithm(integ.transform_id)


def dh_groups(proposals: Iterable[Proposal]) -> set[int]:
    return {
        t.transform_id
        for p in proposals
        for t in p.transforms
        if t.transform_type == TransformType.DH
    }
