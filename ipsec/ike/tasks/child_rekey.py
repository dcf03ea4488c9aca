"""CREATE_CHILD_SA: new CHILD_SAs and their rekeying (RFC 7296 §1.3, §2.8).

The request is ``[N(REKEY_SA),] SA, Ni, [KEi,] TSi, TSr`` and the answer
``SA, Nr, [KEr,] TSi, TSr``. KEYMAT comes from SK_d with the nonces of this
exchange and, with PFS, the new DH secret (§2.17). A rekey is
make-before-break: the responder installs the new SA inbound only and keeps
sending on the old one until the initiator deletes it; the initiator sends on
the new SA at once and then deletes the old pair. When both peers rekey the
same CHILD_SA, the new SA made by the exchange holding the lowest of the four
nonces is deleted by the peer that initiated that exchange (§2.8.1).
"""

from __future__ import annotations

from dataclasses import replace

from ..child_sa import ChildSa, ChildSaState, ChildSaTable, PeerRekey, soft_lifetime
from ..constants import DhGroup, ExchangeType, NotifyType, ProtocolId, TransformType
from ..dh import KeyExchange, generate_key_exchange
from ..errors import (
    ChildSaNotFound,
    IkeNotifyError,
    InvalidKePayload,
    InvalidSyntax,
    NoProposalChosen,
    TemporaryFailure,
    TsUnacceptable,
)
from ..events import (
    ChildSaDeleteReason,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaRekeyFailed,
)
from ..keymat import derive_child_sa_keys
from ..message import IkeMessage
from ..payloads import (
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    TsiPayload,
    TsrPayload,
)
from ..proposals import check_selected, child_suite, dh_groups, select_proposal
from ..traffic_selectors import narrow, within
from .base import IkeSaContext, Task
from .child_delete import ChildDelete
from .ike_rekey import is_ike_rekey

Selectors = tuple[TrafficSelector, ...]


class CreateChildSa(Task):
    """Initiator of CREATE_CHILD_SA for a new CHILD_SA or to rekey ``rekeyed``."""

    def __init__(
        self,
        context: IkeSaContext,
        table: ChildSaTable,
        rekeyed: ChildSa | None = None,
        dh_group: int | None = None,
        invalid_ke_retries: int = 0,
    ) -> None:
        super().__init__(context)
        self._table = table
        self._rekeyed = rekeyed
        self._dh_group = dh_group
        self._invalid_ke_retries = invalid_ke_retries
        self._spi = b""
        self._nonce = b""
        self._peer_nonce = b""
        self._offered: tuple[Proposal, ...] = ()
        self._exchange: KeyExchange | None = None

    def build_i(self) -> list[Payload]:
        context, rekeyed = self.context, self._rekeyed
        config = context.config
        self._spi = context.allocate_spi()
        self._nonce = context.make_nonce()
        self._offered = tuple(replace(p, spi=self._spi) for p in config.esp_proposals)
        payloads: list[Payload] = []
        if rekeyed is not None:
            # §1.3.3: the SPI is the one the peer sends with, our inbound SPI.
            payloads.append(
                NotifyPayload(
                    NotifyType.REKEY_SA, b"", ProtocolId.ESP, rekeyed.inbound_spi
                )
            )
        payloads += [SaPayload(self._offered), NoncePayload(self._nonce)]
        group = self._dh_group or _first_group(self._offered)
        if group is not None:
            self._exchange = generate_key_exchange(group, context.random_bytes)
            payloads.append(KePayload(group, self._exchange.public_value))
        local, remote = self._selectors()
        return payloads + [TsiPayload(local), TsrPayload(remote)]

    def _selectors(self) -> tuple[Selectors, Selectors]:
        if self._rekeyed is not None:
            old = self._rekeyed.established
            return old.local_traffic_selectors, old.remote_traffic_selectors
        config = self.context.config
        return config.local_traffic_selectors, config.remote_traffic_selectors

    def process_i(self, response: IkeMessage) -> None:
        refusal = next((n for n in response.all(NotifyPayload) if n.is_error), None)
        if refusal is not None:
            if not self._retry_with_group(refusal):
                self._failed(refusal.notify_type, "refused by the peer")
            return
        try:
            established = self._accept_answer(response)
        except IkeNotifyError as error:
            self._failed(error.notify_type, error.reason)
            return
        if self._rekeyed is None:
            self._install(established, active=True)
        else:
            self._rekey_done(established, self._rekeyed)

    def _retry_with_group(self, refusal: NotifyPayload) -> bool:
        """C23(b): retry once per allowed round with the group asked for."""
        data = refusal.notification_data
        if refusal.notify_type != NotifyType.INVALID_KE_PAYLOAD or len(data) != 2:
            return False
        wanted = int.from_bytes(data)
        if (
            wanted not in dh_groups(self.context.config.esp_proposals)
            or wanted == (self._exchange.group if self._exchange else None)
            or self._invalid_ke_retries >= self.context.config.max_invalid_ke_retries
        ):
            return False
        retry = CreateChildSa(
            self.context,
            self._table,
            self._rekeyed,
            wanted,
            self._invalid_ke_retries + 1,
        )
        self._table.queue(ExchangeType.CREATE_CHILD_SA, [retry])
        return True

    def _accept_answer(self, response: IkeMessage) -> ChildSaEstablished:
        sa, nonce, ke, tsi, tsr = _required(response)
        if len(sa.proposals) != 1 or len(sa.proposals[0].spi) != 4:
            raise NoProposalChosen("CHILD_SA answer must carry one ESP proposal")
        selected = sa.proposals[0]
        check_selected(replace(selected, spi=self._spi), self._offered)
        shared_secret = self._shared_secret(selected, ke)
        self._peer_nonce = nonce.nonce

        # C27(c): an answer wider than the proposal is refused.
        local, remote = self._selectors()
        if not within(tsi.traffic_selectors, local) or not within(
            tsr.traffic_selectors, remote
        ):
            raise TsUnacceptable("responder widened the traffic selectors")
        return _established(
            self.context,
            selected,
            (self._spi, selected.spi),
            (self._nonce, nonce.nonce, shared_secret),
            (tsi.traffic_selectors, tsr.traffic_selectors),
            is_initiator=True,
        )

    def _shared_secret(self, selected: Proposal, ke: KePayload | None) -> bytes | None:
        group = _first_group((selected,))
        if group is None:
            return None
        if self._exchange is None or self._exchange.group != group:
            raise NoProposalChosen("responder chose a DH group we sent no KEi for")
        if ke is None or ke.dh_group != group:
            raise InvalidSyntax("PFS answer without KEr for the chosen group")
        return self._exchange.shared_secret(ke.key_exchange_data)

    def _install(self, established: ChildSaEstablished, active: bool) -> None:
        self.outcome.append(established)
        rekey_at = soft_lifetime(self.context, self._table.now) if active else None
        state = ChildSaState.INSTALLED if active else ChildSaState.DELETING
        self._table.add(ChildSa(established, state, rekey_at, active))

    def _rekey_done(self, established: ChildSaEstablished, old: ChildSa) -> None:
        ours = min(self._nonce, self._peer_nonce)
        established = replace(established, rekeyed_spi=old.inbound_spi)
        collision, old.collision = old.collision, None
        old_present = self._table.get(old.inbound_spi) is old
        if collision is not None and ours < collision.lowest_nonce:
            # §2.8.1: our exchange holds the lowest nonce; its SA goes, and
            # the peer, whose SA survives, deletes the old one.
            self._install(replace(established, outbound_active=False), active=False)
            self._table.queue(
                ExchangeType.INFORMATIONAL,
                [
                    ChildDelete(
                        self.context,
                        self._table,
                        established.inbound_spi,
                        ChildSaDeleteReason.REDUNDANT,
                    )
                ],
            )
            _survivor_of_peer(self.context, self._table, old, collision)
            return
        self._install(replace(established, outbound_active=True), active=True)
        if old_present:
            old.state, old.successor = ChildSaState.DELETING, established.inbound_spi
            self._table.queue(
                ExchangeType.INFORMATIONAL,
                [
                    ChildDelete(
                        self.context,
                        self._table,
                        old.inbound_spi,
                        ChildSaDeleteReason.REKEYED,
                    )
                ],
            )

    def _failed(self, notify_type: NotifyType | int, reason: str) -> None:
        old = self._rekeyed
        if old is None:
            self.outcome.append(ChildSaFailed(notify_type, reason))
            return
        self.outcome.append(ChildSaRekeyFailed(old.inbound_spi, notify_type, reason))
        collision, old.collision = old.collision, None
        if self._table.get(old.inbound_spi) is not old:
            return
        if collision is not None:
            # The peer's rekey went through: its Delete for the old SA follows.
            _survivor_of_peer(self.context, self._table, old, collision)
        elif old.state is ChildSaState.REKEYING:
            old.state = ChildSaState.INSTALLED
            # RFC 7296 §2.25: try again a little later, as with TEMPORARY_FAILURE.
            if self.context.config.child_rekey_time is not None:
                old.rekey_at = self._table.now + self.context.config.retransmit_timeout


def _survivor_of_peer(
    context: IkeSaContext, table: ChildSaTable, old: ChildSa, collision: PeerRekey
) -> None:
    """The peer's new SA replaces ``old``; it gets a lifetime of its own."""
    old.state, old.successor = ChildSaState.REKEYED, collision.inbound_spi
    survivor = table.get(collision.inbound_spi)
    if survivor is not None:
        survivor.rekey_at = soft_lifetime(context, table.now)


class CreateChildSaResponder(Task):
    """Responder of CREATE_CHILD_SA (CHILD_SAs only; see ``IkeRekey``)."""

    def __init__(self, context: IkeSaContext, table: ChildSaTable) -> None:
        super().__init__(context)
        self._table = table
        self._answer: list[Payload] = []

    def process_r(self, request: IkeMessage) -> None:
        if is_ike_rekey(request):
            return  # IkeRekeyResponder's request
        if self._table.ike_rekeying:
            raise TemporaryFailure("the IKE_SA is being rekeyed")  # §2.25.2
        old = self._rekeyed(request)
        sa, nonce, ke, tsi, tsr = _required(request)
        config = self.context.config
        selected = select_proposal(
            sa.proposals, config.esp_proposals, ke.dh_group if ke else None
        )
        if len(selected.spi) != 4:
            raise InvalidSyntax("ESP proposal without a 4-octet SPI")
        child_suite(selected)
        exchange = _responder_exchange(self.context, selected, ke)

        # C27: keep what both the proposal and our policy allow (§2.9).
        narrowed_i = narrow(tsi.traffic_selectors, config.remote_traffic_selectors)
        narrowed_r = narrow(tsr.traffic_selectors, config.local_traffic_selectors)
        if not narrowed_i or not narrowed_r:
            raise TsUnacceptable("no overlap with the configured traffic selectors")
        spi, our_nonce = self.context.allocate_spi(), self.context.make_nonce()
        shared = (
            exchange.shared_secret(ke.key_exchange_data) if exchange and ke else None
        )
        established = _established(
            self.context,
            selected,
            (spi, selected.spi),
            (nonce.nonce, our_nonce, shared),
            (narrowed_r, narrowed_i),
            is_initiator=False,
        )
        self._answer = [
            SaPayload((replace(selected, spi=spi),)),
            NoncePayload(our_nonce),
        ]
        if exchange is not None:
            self._answer.append(KePayload(exchange.group, exchange.public_value))
        self._answer += [TsiPayload(narrowed_i), TsrPayload(narrowed_r)]
        self._record(established, old, min(nonce.nonce, our_nonce))

    def _rekeyed(self, request: IkeMessage) -> ChildSa | None:
        """The CHILD_SA named by N(REKEY_SA), checked per RFC 7296 §2.25.1."""
        notify = next(
            (
                n
                for n in request.all(NotifyPayload)
                if n.notify_type == NotifyType.REKEY_SA
            ),
            None,
        )
        if notify is None:
            return None
        old = self._table.by_outbound(notify.spi)
        if old is None or notify.protocol_id != ProtocolId.ESP:
            raise ChildSaNotFound("REKEY_SA for a CHILD_SA we do not have")
        if old.state in (ChildSaState.DELETING, ChildSaState.REKEYED):
            raise TemporaryFailure("that CHILD_SA is being closed")
        return old

    def _record(
        self, established: ChildSaEstablished, old: ChildSa | None, lowest: bytes
    ) -> None:
        table = self._table
        if old is None:
            self.outcome.append(established)
            rekey_at = soft_lifetime(self.context, table.now)
            table.add(ChildSa(established, ChildSaState.INSTALLED, rekey_at, True))
            return
        established = replace(
            established, rekeyed_spi=old.inbound_spi, outbound_active=False
        )
        self.outcome.append(established)
        if old.state is ChildSaState.REKEYING:
            # §2.8.1: a collision; our own response decides who survives.
            old.collision = PeerRekey(established.inbound_spi, lowest)
            table.add(ChildSa(established, ChildSaState.INSTALLED, None, False))
            return
        old.state, old.successor = ChildSaState.REKEYED, established.inbound_spi
        rekey_at = soft_lifetime(self.context, table.now)
        table.add(ChildSa(established, ChildSaState.INSTALLED, rekey_at, False))

    def build_r(self) -> list[Payload]:
        return self._answer


def _responder_exchange(
    context: IkeSaContext, selected: Proposal, ke: KePayload | None
) -> KeyExchange | None:
    """Our half of the PFS exchange; C23(b) when KEi is for another group."""
    group = _first_group((selected,))
    if group is None:
        return None
    if ke is None or ke.dh_group != group:
        raise InvalidKePayload(f"PFS needs KEi for {group.name}", group)
    return generate_key_exchange(group, context.random_bytes)


def _established(
    context: IkeSaContext,
    selected: Proposal,
    spis: tuple[bytes, bytes],
    keying: tuple[bytes, bytes, bytes | None],
    selectors: tuple[Selectors, Selectors],
    *,
    is_initiator: bool,
) -> ChildSaEstablished:
    """KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr) for this exchange (§2.17)."""
    suite = child_suite(selected)
    ike_suite, keys = context.require_keys()
    nonce_i, nonce_r, shared_secret = keying
    child_keys = derive_child_sa_keys(
        ike_suite.transforms.prf,
        keys.sk_d,
        nonce_i,
        nonce_r,
        suite.encr.key_size,
        suite.integ.key_size if suite.integ else 0,
        shared_secret,
    )
    return ChildSaEstablished(
        ProtocolId.ESP,
        spis[0],
        spis[1],
        suite.encr,
        suite.integ,
        suite.esn,
        child_keys,
        is_initiator,
        selectors[0],
        selectors[1],
    )


def _required(
    message: IkeMessage,
) -> tuple[SaPayload, NoncePayload, KePayload | None, TsiPayload, TsrPayload]:
    sa = message.first(SaPayload)
    nonce = message.first(NoncePayload)
    tsi = message.first(TsiPayload)
    tsr = message.first(TsrPayload)
    if sa is None or nonce is None or tsi is None or tsr is None:
        raise InvalidSyntax("CREATE_CHILD_SA without SA, Nonce, TSi and TSr")
    return sa, nonce, message.first(KePayload), tsi, tsr


def _first_group(proposals: tuple[Proposal, ...]) -> DhGroup | None:
    """The PFS group of the first proposal that asks for one, if any."""
    for proposal in proposals:
        for transform in proposal.transforms:
            if transform.transform_type == TransformType.DH and transform.transform_id:
                return DhGroup(transform.transform_id)
    return None
