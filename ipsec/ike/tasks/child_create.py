"""The CHILD_SA carried by IKE_AUTH (RFC 7296 §1.2, §2.9, §2.17).

A refused CHILD_SA does not fail the IKE_SA: the responder answers with the
error Notify next to its AUTH, and both sides report ``ChildSaFailed``.
"""

from __future__ import annotations

from dataclasses import replace

from ..constants import NotifyType, ProtocolId
from ..errors import (
    IkeNotifyError,
    InvalidSyntax,
    NoAdditionalSas,
    NoProposalChosen,
    TsUnacceptable,
)
from ..events import ChildSaEstablished, ChildSaFailed
from ..keymat import derive_child_sa_keys
from ..message import IkeMessage
from ..payloads import (
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    TsiPayload,
    TsrPayload,
)
from ..proposals import ChildSaSuite, check_selected, child_suite, select_proposal
from ..traffic_selectors import narrow, within
from .base import IkeSaContext, Task

# RFC 7296 §3.10.1: errors that refuse only the CHILD_SA.
CHILD_SA_ERRORS = frozenset(
    {
        NotifyType.NO_PROPOSAL_CHOSEN,
        NotifyType.SINGLE_PAIR_REQUIRED,
        NotifyType.NO_ADDITIONAL_SAS,
        NotifyType.INTERNAL_ADDRESS_FAILURE,
        NotifyType.FAILED_CP_REQUIRED,
        NotifyType.TS_UNACCEPTABLE,
        NotifyType.INVALID_SELECTORS,
    }
)


class ChildCreate(Task):
    def __init__(self, context: IkeSaContext) -> None:
        super().__init__(context)
        self._spi = b""
        """Our SPI: the one the peer will send with."""
        self._offered: tuple[Proposal, ...] = ()
        self._selected: Proposal | None = None
        self._narrowed: tuple[tuple[TrafficSelector, ...], ...] = ((), ())
        self._error: IkeNotifyError | None = None

    # Initiator

    def build_i(self) -> list[Payload]:
        config = self.context.config
        self._spi = self.context.allocate_spi()
        self._offered = tuple(replace(p, spi=self._spi) for p in config.esp_proposals)
        return [
            SaPayload(self._offered),
            TsiPayload(config.local_traffic_selectors),
            TsrPayload(config.remote_traffic_selectors),
        ]

    def process_i(self, response: IkeMessage) -> None:
        refusal = next(
            (
                n
                for n in response.all(NotifyPayload)
                if n.notify_type in CHILD_SA_ERRORS
            ),
            None,
        )
        if refusal is not None:
            self.outcome.append(
                ChildSaFailed(refusal.notify_type, "refused by the peer")
            )
            return
        try:
            self._accept_answer(response)
        except IkeNotifyError as error:
            self.outcome.append(ChildSaFailed(error.notify_type, error.reason))

    def _accept_answer(self, response: IkeMessage) -> None:
        sa, tsi, tsr = _required(response)
        if len(sa.proposals) != 1 or len(sa.proposals[0].spi) != 4:
            raise NoProposalChosen("CHILD_SA answer must carry one ESP proposal")
        selected = sa.proposals[0]
        check_selected(replace(selected, spi=self._spi), self._offered)

        # C27(c): an answer wider than the proposal is refused.
        config = self.context.config
        if not within(tsi.traffic_selectors, config.local_traffic_selectors) or not (
            within(tsr.traffic_selectors, config.remote_traffic_selectors)
        ):
            raise TsUnacceptable("responder widened the traffic selectors")
        self._established(
            child_suite(selected),
            selected.spi,
            tsi.traffic_selectors,
            tsr.traffic_selectors,
        )

    # Responder

    def process_r(self, request: IkeMessage) -> None:
        if request.first(SaPayload) is None:
            return  # no CHILD_SA requested (RFC 6023 childless IKE_SA)
        try:
            self._choose(request)
        except IkeNotifyError as error:
            self._error = error
            self.outcome.append(ChildSaFailed(error.notify_type, error.reason))

    def _choose(self, request: IkeMessage) -> None:
        sa, tsi, tsr = _required(request)
        config = self.context.config
        selected = select_proposal(sa.proposals, config.esp_proposals)
        if len(selected.spi) != 4:
            raise InvalidSyntax("ESP proposal without a 4-octet SPI")
        suite = child_suite(selected)

        # C27: keep what both the proposal and our policy allow (RFC 7296 §2.9).
        narrowed_i = narrow(tsi.traffic_selectors, config.remote_traffic_selectors)
        narrowed_r = narrow(tsr.traffic_selectors, config.local_traffic_selectors)
        if not narrowed_i or not narrowed_r:
            raise TsUnacceptable("no overlap with the configured traffic selectors")
        self._spi = self.context.allocate_spi()
        self._selected = replace(selected, spi=self._spi)
        self._narrowed = (narrowed_i, narrowed_r)
        self._established(suite, selected.spi, narrowed_r, narrowed_i)

    def build_r(self) -> list[Payload]:
        if self._error is not None:
            return [
                NotifyPayload(self._error.notify_type, self._error.notification_data)
            ]
        if self._selected is None:
            return []
        narrowed_i, narrowed_r = self._narrowed
        return [
            SaPayload((self._selected,)),
            TsiPayload(narrowed_i),
            TsrPayload(narrowed_r),
        ]

    # Both

    def _established(
        self,
        suite: ChildSaSuite,
        peer_spi: bytes,
        local: tuple[TrafficSelector, ...],
        remote: tuple[TrafficSelector, ...],
    ) -> None:
        """KEYMAT from the IKE_SA_INIT nonces, as the CHILD_SA of IKE_AUTH uses."""
        context = self.context
        ike_suite, keys = context.require_keys()
        integrity_size = suite.integ.key_size if suite.integ else 0
        child_keys = derive_child_sa_keys(
            ike_suite.transforms.prf,
            keys.sk_d,
            context.nonce_i,
            context.nonce_r,
            suite.encr.key_size,
            integrity_size,
        )
        self.outcome.append(
            ChildSaEstablished(
                ProtocolId.ESP,
                self._spi,
                peer_spi,
                suite.encr,
                suite.integ,
                suite.esn,
                child_keys,
                context.is_original_initiator,
                local,
                remote,
            )
        )


def _required(message: IkeMessage) -> tuple[SaPayload, TsiPayload, TsrPayload]:
    sa = message.first(SaPayload)
    tsi = message.first(TsiPayload)
    tsr = message.first(TsrPayload)
    if sa is None or tsi is None or tsr is None:
        raise InvalidSyntax("CHILD_SA without SA, TSi and TSr")
    return sa, tsi, tsr


class RefuseCreateChildSa(Task):
    """CREATE_CHILD_SA is not implemented yet: refuse it politely.

    NO_ADDITIONAL_SAS (RFC 7296 §3.10.1) tells the peer we take no more
    CHILD_SAs on this IKE_SA, instead of leaving it to retransmit.
    """

    def process_r(self, request: IkeMessage) -> None:
        raise NoAdditionalSas("CREATE_CHILD_SA is not supported yet")
