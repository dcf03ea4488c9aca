"""CREATE_CHILD_SA rekeying the IKE_SA (RFC 7296 §1.3.2, §2.18).

Request ``SA, Ni, KEi`` and answer ``SA, Nr, KEr``, where each proposal
carries the sender's new 8-octet IKE SPI. The new IKE_SA takes
SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), its initiator is the
initiator of this exchange, and its message IDs start again at zero. The
tasks only compute the new IKE_SA; the engine builds it, moves the CHILD_SAs
to it and deletes the old one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..child_sa import ChildSaTable
from ..constants import DhGroup, ExchangeType, NotifyType, ProtocolId, TransformType
from ..dh import KeyExchange, generate_key_exchange
from ..errors import (
    IkeNotifyError,
    InvalidKePayload,
    InvalidSyntax,
    NoProposalChosen,
    TemporaryFailure,
)
from ..events import IkeSaRekeyFailed
from ..keymat import IkeSaKeys, compute_rekeyed_skeyseed, derive_ike_sa_keys
from ..message import IkeMessage
from ..payloads import (
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
)
from ..proposals import (
    IkeSaSuite,
    check_selected,
    dh_groups,
    ike_suite,
    select_proposal,
)
from .base import IkeSaContext, Task


@dataclass(frozen=True, slots=True)
class RekeyedIkeSa:
    """Everything the engine needs to run the new IKE_SA."""

    is_original_initiator: bool
    spi_i: bytes
    spi_r: bytes
    nonce_i: bytes
    nonce_r: bytes
    suite: IkeSaSuite
    keys: IkeSaKeys
    """SK_*; prints as sizes only."""

    @property
    def lowest_nonce(self) -> bytes:
        """What RFC 7296 §2.8.1 compares when two rekeys collide."""
        return min(self.nonce_i, self.nonce_r)


def is_ike_rekey(request: IkeMessage) -> bool:
    sa = request.first(SaPayload)
    return sa is not None and any(p.protocol_id == ProtocolId.IKE for p in sa.proposals)


def allocate_ike_spi(context: IkeSaContext) -> bytes:
    spi = context.random_bytes(8)
    return spi if any(spi) else b"\x00" * 7 + b"\x01"


def _rekeyed(
    context: IkeSaContext,
    suite: IkeSaSuite,
    shared_secret: bytes,
    spis: tuple[bytes, bytes],
    nonces: tuple[bytes, bytes],
    is_initiator: bool,
) -> RekeyedIkeSa:
    old_suite, old_keys = context.require_keys()
    skeyseed = compute_rekeyed_skeyseed(
        old_suite.transforms.prf, old_keys.sk_d, shared_secret, *nonces
    )
    keys = derive_ike_sa_keys(suite.transforms, skeyseed, *nonces, *spis)
    return RekeyedIkeSa(is_initiator, *spis, *nonces, suite, keys)


class IkeRekey(Task):
    """Initiator: ``result`` is set once the peer has agreed."""

    def __init__(
        self,
        context: IkeSaContext,
        table: ChildSaTable,
        dh_group: int | None = None,
        invalid_ke_retries: int = 0,
    ) -> None:
        super().__init__(context)
        self._table = table
        self._dh_group = dh_group
        self._invalid_ke_retries = invalid_ke_retries
        self._spi = b""
        self._nonce = b""
        self._exchange: KeyExchange | None = None
        self.result: RekeyedIkeSa | None = None
        self.retrying = False

    def build_i(self) -> list[Payload]:
        context = self.context
        proposals = context.config.ike_proposals
        group = self._dh_group or _first_group(proposals)
        self._spi = allocate_ike_spi(context)
        self._nonce = context.make_nonce()
        self._exchange = generate_key_exchange(group, context.random_bytes)
        return [
            SaPayload(tuple(replace(p, spi=self._spi) for p in proposals)),
            NoncePayload(self._nonce),
            KePayload(group, self._exchange.public_value),
        ]

    def process_i(self, response: IkeMessage) -> None:
        refusal = next((n for n in response.all(NotifyPayload) if n.is_error), None)
        if refusal is not None:
            if not self._retry_with_group(refusal):
                self.outcome.append(
                    IkeSaRekeyFailed(refusal.notify_type, "refused by the peer")
                )
            return
        try:
            self.result = self._accept_answer(response)
        except IkeNotifyError as error:
            self.outcome.append(IkeSaRekeyFailed(error.notify_type, error.reason))

    def _retry_with_group(self, refusal: NotifyPayload) -> bool:
        """C23(d): the responder prefers another group we also proposed."""
        data = refusal.notification_data
        config = self.context.config
        if refusal.notify_type != NotifyType.INVALID_KE_PAYLOAD or len(data) != 2:
            return False
        wanted = int.from_bytes(data)
        if (
            wanted not in dh_groups(config.ike_proposals)
            or self._invalid_ke_retries >= config.max_invalid_ke_retries
        ):
            return False
        retry = IkeRekey(
            self.context, self._table, wanted, self._invalid_ke_retries + 1
        )
        self._table.queue(ExchangeType.CREATE_CHILD_SA, [retry])
        self.retrying = True
        return True

    def _accept_answer(self, response: IkeMessage) -> RekeyedIkeSa:
        sa, nonce, ke = _required(response)
        if len(sa.proposals) != 1 or len(sa.proposals[0].spi) != 8:
            raise NoProposalChosen("IKE_SA rekey answer must carry one IKE proposal")
        selected = sa.proposals[0]
        offered = tuple(
            replace(p, spi=selected.spi) for p in self.context.config.ike_proposals
        )
        check_selected(selected, offered)
        suite = ike_suite(selected)
        exchange = self._exchange
        if exchange is None or not suite.dh_group == ke.dh_group == exchange.group:
            raise NoProposalChosen("responder answered with another DH group")
        shared = exchange.shared_secret(ke.key_exchange_data)
        spis = (self._spi, selected.spi)
        return _rekeyed(
            self.context, suite, shared, spis, (self._nonce, nonce.nonce), True
        )


class IkeRekeyResponder(Task):
    """Responder; ``busy`` makes it answer TEMPORARY_FAILURE (§2.25.2)."""

    def __init__(self, context: IkeSaContext, busy: str | None) -> None:
        super().__init__(context)
        self._busy = busy
        self._answer: list[Payload] = []
        self.result: RekeyedIkeSa | None = None

    def process_r(self, request: IkeMessage) -> None:
        if not is_ike_rekey(request):
            return
        if self._busy is not None:
            raise TemporaryFailure(self._busy)
        sa, nonce, ke = _required(request)
        config = self.context.config
        selected = select_proposal(sa.proposals, config.ike_proposals, ke.dh_group)
        if len(selected.spi) != 8:
            raise InvalidSyntax("IKE proposal without an 8-octet SPI")
        suite = ike_suite(selected)
        if ke.dh_group != suite.dh_group:
            raise InvalidKePayload(
                f"KEi is for group {ke.dh_group}, {suite.dh_group.name} chosen",
                suite.dh_group,
            )
        exchange = generate_key_exchange(suite.dh_group, self.context.random_bytes)
        shared = exchange.shared_secret(ke.key_exchange_data)
        spi, our_nonce = allocate_ike_spi(self.context), self.context.make_nonce()
        self.result = _rekeyed(
            self.context,
            suite,
            shared,
            (selected.spi, spi),
            (nonce.nonce, our_nonce),
            False,
        )
        self._answer = [
            SaPayload((replace(selected, spi=spi),)),
            NoncePayload(our_nonce),
            KePayload(suite.dh_group, exchange.public_value),
        ]

    def build_r(self) -> list[Payload]:
        return self._answer


def _required(message: IkeMessage) -> tuple[SaPayload, NoncePayload, KePayload]:
    sa = message.first(SaPayload)
    nonce = message.first(NoncePayload)
    ke = message.first(KePayload)
    if sa is None or nonce is None or ke is None:
        raise InvalidSyntax("IKE_SA rekey without SA, Nonce and KE")
    return sa, nonce, ke


def _first_group(proposals: tuple[Proposal, ...]) -> DhGroup:
    for proposal in proposals:
        for transform in proposal.transforms:
            if transform.transform_type == TransformType.DH and transform.transform_id:
                return DhGroup(transform.transform_id)
    raise NoProposalChosen("no Diffie-Hellman group configured")
