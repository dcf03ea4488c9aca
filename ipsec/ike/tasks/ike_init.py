"""IKE_SA_INIT: negotiate the IKE SA's algorithms, nonces and DH (RFC 7296 §1.2)."""

from __future__ import annotations

from ..constants import DhGroup, TransformType
from ..dh import KeyExchange, generate_key_exchange
from ..errors import InvalidKePayload, InvalidSyntax, NoProposalChosen
from ..message import IkeMessage
from ..payloads import KePayload, NoncePayload, Payload, Proposal, SaPayload
from ..proposals import IkeSaSuite, check_selected, ike_suite, select_proposal
from .base import IkeSaContext, Task


class IkeInit(Task):
    def __init__(self, context: IkeSaContext, dh_group: int | None = None) -> None:
        """``dh_group`` is the group for KEi; by default the first one proposed."""
        super().__init__(context)
        self.dh_group = dh_group
        self._exchange: KeyExchange | None = None
        self._selected: Proposal | None = None
        self._suite: IkeSaSuite | None = None

    # Initiator

    def build_i(self) -> list[Payload]:
        context = self.context
        group = self.dh_group or _first_group(context.config.ike_proposals)
        self._exchange = generate_key_exchange(group, context.random_bytes)
        context.nonce_i = context.make_nonce()
        return [
            SaPayload(context.config.ike_proposals),
            KePayload(group, self._exchange.public_value),
            NoncePayload(context.nonce_i),
        ]

    def process_i(self, response: IkeMessage) -> None:
        sa, ke, nonce = _required(response)
        if len(sa.proposals) != 1 or self._exchange is None:
            raise NoProposalChosen("IKE_SA_INIT response must carry one proposal")
        check_selected(sa.proposals[0], self.context.config.ike_proposals)
        suite = ike_suite(sa.proposals[0])
        if suite.dh_group != self._exchange.group or ke.dh_group != suite.dh_group:
            raise NoProposalChosen("responder answered with another DH group")

        shared_secret = self._exchange.shared_secret(ke.key_exchange_data)
        self.context.nonce_r = nonce.nonce
        self.context.install_ike_keys(suite, shared_secret)

    # Responder

    def process_r(self, request: IkeMessage) -> None:
        sa, ke, nonce = _required(request)
        config = self.context.config
        selected = select_proposal(sa.proposals, config.ike_proposals, ke.dh_group)
        suite = ike_suite(selected)

        # RFC 7296 §1.2: KEi for another group than the chosen one.
        if ke.dh_group != suite.dh_group:
            raise InvalidKePayload(
                f"KEi is for group {ke.dh_group}, {suite.dh_group.name} chosen",
                suite.dh_group,
            )
        self._exchange = generate_key_exchange(
            suite.dh_group, self.context.random_bytes
        )
        shared_secret = self._exchange.shared_secret(ke.key_exchange_data)
        self.context.nonce_i = nonce.nonce
        self.context.nonce_r = self.context.make_nonce()
        self.context.install_ike_keys(suite, shared_secret)
        self._selected, self._suite = selected, suite

    def build_r(self) -> list[Payload]:
        if self._selected is None or self._suite is None or self._exchange is None:
            raise RuntimeError("build_r before process_r")
        return [
            SaPayload((self._selected,)),
            KePayload(self._suite.dh_group, self._exchange.public_value),
            NoncePayload(self.context.nonce_r),
        ]


def _required(message: IkeMessage) -> tuple[SaPayload, KePayload, NoncePayload]:
    sa = message.first(SaPayload)
    ke = message.first(KePayload)
    nonce = message.first(NoncePayload)
    if sa is None or ke is None or nonce is None:
        raise InvalidSyntax("IKE_SA_INIT without SA, KE and Nonce")
    return sa, ke, nonce


def _first_group(proposals: tuple[Proposal, ...]) -> DhGroup:
    for proposal in proposals:
        for transform in proposal.transforms:
            if transform.transform_type == TransformType.DH and transform.transform_id:
                return DhGroup(transform.transform_id)
    raise NoProposalChosen("no Diffie-Hellman group configured")
