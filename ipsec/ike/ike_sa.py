"""The sans-IO IKE_SA engine: IKE_SA_INIT and IKE_AUTH with a PSK (RFC 7296).

One ``IkeSa`` is one IKE SA seen from one peer. It takes datagrams and the
time, and gives back datagrams to send, events and the next timer deadline;
it reads no clock and draws randomness only from the ``random_bytes`` it is
given. Message IDs use a window of one in each direction (RFC 7296 §2.3):
the initiator of an exchange retransmits its request until answered, the
responder replays its cached response to a retransmitted request (§2.1).

State diagram (original initiator / original responder)::

    IDLE --initiate--> IKE_SA_INIT_SENT --response--> IKE_AUTH_SENT --+
      |                                                              |
      +--IKE_SA_INIT request--> IKE_SA_INIT_DONE --IKE_AUTH request--+--> ESTABLISHED
    any state --error Notify, failed AUTH, retransmits exhausted--> FAILED
    ESTABLISHED --Delete sent or received, peer dead--> DELETED
    ESTABLISHED --IKE_SA rekeyed, CHILD_SAs moved--> REKEYED --Delete--> DELETED

Once established, CREATE_CHILD_SA and INFORMATIONAL exchanges (rekeying,
Delete, liveness; ``tasks/child_rekey.py``, ``child_delete.py``,
``ike_delete.py``, ``ike_dpd.py``) queue behind the one outstanding request.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from enum import Enum

from .child_sa import ChildSa, ChildSaState, ChildSaTable, jitter, soft_lifetime
from .config import DpdAction, IkeSaConfig
from .constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from .crypto import RandomBytes
from .errors import (
    IkeError,
    IkeMessageDropped,
    IkeNotifyError,
    InvalidKePayload,
    InvalidSyntax,
)
from .events import (
    ChildSaDeleteReason,
    ChildSaEstablished,
    IkeEvent,
    IkeSaCreatedByRekey,
    IkeSaDeleted,
    IkeSaDeleteReason,
    IkeSaFailed,
    IkeSaRekeyed,
)
from .fragments import FragmentReassembler
from .keymat import IkeSaKeys, IkeSaTransforms, sk_ciphers
from .message import (
    IkeHeader,
    IkeMessage,
    decode_header,
    decode_message,
    decrypt_message,
    encode_message,
    protect_message,
)
from .payloads import (
    AuthPayload,
    DeletePayload,
    EncryptedFragmentPayload,
    EncryptedPayload,
    NotifyPayload,
    Payload,
    SaPayload,
)
from .proposals import dh_groups
from .tasks import (
    ChildCreate,
    IkeAuth,
    IkeInit,
    IkeNatd,
    IkeSaContext,
    Task,
)
from .tasks.base import Endpoint, SpiAllocator
from .tasks.child_delete import ChildDelete, InformationalResponder
from .tasks.child_rekey import CreateChildSa, CreateChildSaResponder
from .tasks.ike_cert_pre import IkeCertPre
from .tasks.ike_delete import IkeDelete, ike_sa_deleted_events
from .tasks.ike_dpd import InitialContact, LivenessCheck
from .tasks.ike_fragmentation import IkeFragmentation, message_size_limit
from .tasks.ike_rekey import IkeRekey, IkeRekeyResponder, RekeyedIkeSa

logger = logging.getLogger("ipsec.ike")

_SPI_ZERO = bytes(8)
_MAX_COOKIE_RETRIES = 3
"""IKE_SA_INIT repeats for N(COOKIE); forged challenges cannot loop us."""
_MAX_COOKIE_SIZE = 64  # RFC 7296 §2.6: 1 to 64 octets


class IkeSaState(Enum):
    IDLE = "idle"
    IKE_SA_INIT_SENT = "IKE_SA_INIT sent"
    IKE_SA_INIT_DONE = "IKE_SA_INIT done, awaiting IKE_AUTH"
    IKE_AUTH_SENT = "IKE_AUTH sent"
    ESTABLISHED = "established"
    FAILED = "failed"
    REKEYED = "rekeyed, awaiting its Delete"
    DELETED = "deleted"


@dataclass(eq=False)
class _OutstandingRequest:
    """Our request still waiting for its response (window size 1)."""

    message_id: int
    exchange_type: ExchangeType
    tasks: list[Task]
    datagrams: list[bytes] = field(repr=False)
    deadline: float
    retransmissions: int = 0
    last_problem: str = ""
    """Why the last (unprotected) response to it was ignored, if one was."""


class IkeSa:
    def __init__(
        self,
        config: IkeSaConfig,
        *,
        is_initiator: bool,
        local_spi: bytes,
        random_bytes: RandomBytes,
        local_endpoint: Endpoint | None = None,
        remote_endpoint: Endpoint | None = None,
        spi_allocator: SpiAllocator | None = None,
    ) -> None:
        """``local_spi`` is our 8-octet IKE SPI (SPIi or SPIr by role).

        ``spi_allocator`` gives our inbound CHILD_SA SPIs (the data plane's
        get_spi); without it they are drawn from ``random_bytes``.

        With both endpoints given, IKE_SA_INIT carries NAT detection; the
        responder's ``remote_endpoint`` is where the IKE_SA_INIT came from.
        """
        if len(local_spi) != 8 or local_spi == _SPI_ZERO:
            raise ValueError("an IKE SPI is 8 non-zero octets")
        self._context = IkeSaContext(
            config,
            is_initiator,
            random_bytes,
            spi_i=local_spi if is_initiator else _SPI_ZERO,
            spi_r=_SPI_ZERO if is_initiator else local_spi,
            local_endpoint=local_endpoint,
            remote_endpoint=remote_endpoint,
            spi_allocator=spi_allocator,
        )
        self._state = IkeSaState.IDLE
        self._outstanding: _OutstandingRequest | None = None
        self._next_request_id = 0
        self._next_peer_request_id = 0
        self._cached_response: list[bytes] = []
        self._invalid_ke_retries = 0
        self._cookie: bytes | None = None
        """The responder's last N(COOKIE), repeated first in IKE_SA_INIT."""
        self._cookie_retries = 0
        self._reassemblers: dict[bool, FragmentReassembler] = {}
        """SKF reassembly of the peer's requests (False) and responses (True)."""
        self._to_send: list[bytes] = []
        self._events: deque[IkeEvent] = deque()
        self._children = ChildSaTable(config.child_life_time)
        self._last_heard = 0.0
        """When the last authenticated message came from the peer."""
        self._ike_rekey_at: float | None = None
        self._ike_collision: tuple[IkeSa, bytes] | None = None
        """The IKE_SA the peer's colliding rekey made, and its lowest nonce."""
        self._redundant = False
        """Made by the losing exchange of an IKE_SA rekey collision."""
        self._deferred_deletion: IkeSaDeleted | None = None
        self._own_ike_rekey = False
        """Our IKE_SA rekey is queued or outstanding."""
        self._awaiting_child_sas = False
        """Made by a rekey whose collision is not resolved yet: not in use."""
        """The peer's Delete, held until our own rekey response is in."""
        self.drops: Counter[str] = Counter()
        """Datagrams discarded unanswered, by reason (attacker-controlled)."""

    # -- public surface ----------------------------------------------------

    @property
    def state(self) -> IkeSaState:
        return self._state

    @property
    def spi_i(self) -> bytes:
        return self._context.spi_i

    @property
    def spi_r(self) -> bytes:
        return self._context.spi_r

    @property
    def is_original_initiator(self) -> bool:
        """Whether we sent the IKE_SA_INIT (or the rekey) that made this IKE_SA."""
        return self._context.is_original_initiator

    @property
    def nat_detected(self) -> tuple[bool, bool]:
        """(we are behind a NAT, the peer is), known once IKE_SA_INIT is done.

        Either one moves the IKE_SA and its ESP to UDP port 4500 (RFC 7296
        §2.23, RFC 3948).
        """
        return self._context.local_behind_nat, self._context.remote_behind_nat

    def export_keys(self) -> tuple[IkeSaTransforms, IkeSaKeys] | None:
        """The negotiated transforms and SK_*, for an opt-in key log only.

        None until IKE_SA_INIT has completed. Never log what this returns.
        """
        context = self._context
        if context.suite is None or context.keys is None:
            return None
        return context.suite.transforms, context.keys

    @property
    def child_sas(self) -> tuple[ChildSa, ...]:
        """The CHILD_SAs of this IKE_SA, including those about to go."""
        return tuple(self._children)

    def create_child_sa(self, now: float) -> None:
        """Start a CREATE_CHILD_SA for one more CHILD_SA (RFC 7296 §1.3.1)."""
        self._require_established()
        task = CreateChildSa(self._context, self._children)
        self._children.queue(ExchangeType.CREATE_CHILD_SA, [task])
        self._send_pending(now)

    def rekey_child_sa(self, inbound_spi: bytes, now: float) -> None:
        """Rekey the CHILD_SA we receive with on ``inbound_spi`` (§1.3.3)."""
        self._require_established()
        child = self._children.get(inbound_spi)
        if child is None or child.state is not ChildSaState.INSTALLED:
            raise RuntimeError("no installed CHILD_SA with that inbound SPI")
        self._queue_child_rekey(child)
        self._send_pending(now)

    def delete_child_sa(self, inbound_spi: bytes, now: float) -> None:
        """Delete a CHILD_SA pair with an INFORMATIONAL exchange (§1.4.1)."""
        self._require_established()
        child = self._children.get(inbound_spi)
        if child is None or child.state is not ChildSaState.INSTALLED:
            raise RuntimeError("no installed CHILD_SA with that inbound SPI")
        child.state = ChildSaState.DELETING
        reason = ChildSaDeleteReason.DELETED_LOCALLY
        task = ChildDelete(self._context, self._children, inbound_spi, reason)
        self._children.queue(ExchangeType.INFORMATIONAL, [task])
        self._send_pending(now)

    def rekey_ike_sa(self, now: float) -> None:
        """Rekey the IKE_SA (§1.3.2); ``IkeSaCreatedByRekey`` brings the new one."""
        self._require_established()
        self._children.ike_rekeying = self._own_ike_rekey = True
        self._ike_rekey_at = None
        task = IkeRekey(self._context, self._children)
        self._children.queue(ExchangeType.CREATE_CHILD_SA, [task])
        self._send_pending(now)

    def delete(self, now: float) -> None:
        """Delete the IKE_SA and with it every CHILD_SA (§1.4.1)."""
        self._require_established()
        self._children.pending.clear()
        task = IkeDelete(self._context, self._children)
        self._children.queue(ExchangeType.INFORMATIONAL, [task])
        self._send_pending(now)

    def initiate(self, now: float) -> None:
        """Start IKE_SA_INIT (original initiator only)."""
        if (
            not self._context.is_original_initiator
            or self._state is not IkeSaState.IDLE
        ):
            raise RuntimeError("initiate() is for a fresh initiator IKE_SA")
        tasks = _init_tasks(IkeInit(self._context), self._context)
        self._send_request(ExchangeType.IKE_SA_INIT, tasks, now)
        self._set_state(IkeSaState.IKE_SA_INIT_SENT)

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Feed one UDP payload (without any non-ESP marker)."""
        try:
            header = decode_header(data)
        except IkeError as error:
            self._drop(f"bad header: {error}")
            return
        self._children.now = now
        if header.is_response:
            self._receive_response(data, header, now)
        else:
            self._receive_request(data, header, now)

    def datagrams_to_send(self) -> list[bytes]:
        out, self._to_send = self._to_send, []
        return out

    def get_timer(self) -> float | None:
        """The next retransmission, soft lifetime or liveness check due."""
        deadlines = [self._outstanding.deadline] if self._outstanding else []
        if self._state is IkeSaState.ESTABLISHED:
            deadlines += [
                child.rekey_at
                for child in self._children
                if child.rekey_at is not None and child.state is ChildSaState.INSTALLED
            ]
            deadlines += [
                child.expire_at
                for child in self._children
                if child.expire_at is not None
                and child.state is not ChildSaState.DELETING
            ]
            delay = self._context.config.dpd_delay
            if delay is not None and self._outstanding is None:
                deadlines.append(self._last_heard + delay)
            if self._ike_rekey_at is not None:
                deadlines.append(self._ike_rekey_at)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Retransmit or give up (RFC 7296 §2.1), then start what is due."""
        self._children.now = now
        request = self._outstanding
        if request is not None and now >= request.deadline:
            self._retransmit(request, now)
        if self._state is IkeSaState.ESTABLISHED:
            self._start_due_exchanges(now)
        elif self._state is IkeSaState.REKEYED:
            self._send_pending(now)

    def _retransmit(self, request: _OutstandingRequest, now: float) -> None:
        config = self._context.config
        if request.retransmissions >= config.retransmit_tries:
            problem = (
                f" (ignored: {request.last_problem})" if request.last_problem else ""
            )
            self._give_up(f"no response to {request.exchange_type.name}{problem}")
            return
        request.retransmissions += 1
        delay = (
            config.retransmit_timeout * config.retransmit_base**request.retransmissions
        )
        request.deadline = now + delay
        self._to_send.extend(request.datagrams)

    def next_event(self) -> IkeEvent | None:
        return self._events.popleft() if self._events else None

    # -- exchanges after IKE_AUTH --------------------------------------------

    def _require_established(self) -> None:
        if self._state is not IkeSaState.ESTABLISHED:
            raise RuntimeError("the IKE_SA is not established")
        if self._children.ike_rekeying:
            raise RuntimeError("the IKE_SA is being rekeyed")

    def _queue_child_rekey(self, child: ChildSa) -> None:
        # Marked now, so that the peer's rekey of it counts as a collision.
        child.state, child.rekey_at = ChildSaState.REKEYING, None
        task = CreateChildSa(self._context, self._children, child)
        self._children.queue(ExchangeType.CREATE_CHILD_SA, [task])

    def _start_due_exchanges(self, now: float) -> None:
        # Rekeys that must wait for an IKE_SA rekey are tried again later.
        later = now + self._context.config.retransmit_timeout
        blocked = self._children.ike_rekeying
        if self._ike_rekey_at is not None and now >= self._ike_rekey_at:
            if blocked:
                self._ike_rekey_at = later
            else:
                self.rekey_ike_sa(now)
        for child in self._children:
            if child.expire_at is not None and now >= child.expire_at:
                self._expire(child)
            elif child.rekey_at is not None and now >= child.rekey_at:
                if child.state is not ChildSaState.INSTALLED:
                    continue
                if blocked:
                    child.rekey_at = later
                else:
                    self._queue_child_rekey(child)
        delay = self._context.config.dpd_delay
        idle = self._outstanding is None and not self._children.pending
        if delay is not None and idle and now >= self._last_heard + delay:
            # RFC 7296 §1.4: an empty INFORMATIONAL request checks liveness.
            task = LivenessCheck(self._context)
            self._children.queue(ExchangeType.INFORMATIONAL, [task])
        self._send_pending(now)

    def _expire(self, child: ChildSa) -> None:
        """The hard lifetime ran out before a rekey replaced it: delete it."""
        if child.state is ChildSaState.DELETING:
            return
        child.state, child.rekey_at = ChildSaState.DELETING, None
        reason = ChildSaDeleteReason.EXPIRED
        task = ChildDelete(self._context, self._children, child.inbound_spi, reason)
        self._children.queue(ExchangeType.INFORMATIONAL, [task])

    def _send_pending(self, now: float) -> None:
        """Send the next queued request once the window is free (§2.3)."""
        live = self._state in (IkeSaState.ESTABLISHED, IkeSaState.REKEYED)
        if self._outstanding is not None or not live:
            return
        if self._children.pending:
            exchange, tasks = self._children.pending.popleft()
            self._send_request(exchange, tasks, now)

    def _emit(self, events: list[IkeEvent], now: float) -> None:
        """Report events, and keep the CHILD_SA table in step with them."""
        self._events.extend(events)
        for event in events:
            if (
                isinstance(event, ChildSaEstablished)
                and self._children.get(event.inbound_spi) is None
            ):
                rekey_at = soft_lifetime(self._context, now)
                child = ChildSa(event, ChildSaState.INSTALLED, rekey_at, True)
                self._children.add(child)
            elif isinstance(event, IkeSaDeleted):
                self._outstanding = None
                self._set_state(IkeSaState.DELETED)

    def _give_up(self, reason: str) -> None:
        """§2.4: a peer that stops answering an established IKE_SA is dead."""
        deferred, self._deferred_deletion = self._deferred_deletion, None
        if deferred is not None:
            self._emit([deferred], self._children.now)
            return
        if self._state not in (IkeSaState.ESTABLISHED, IkeSaState.REKEYED):
            self._fail(None, reason)
            return
        logger.debug("%s: %s", self._context.spi_i.hex(), reason)
        restart = self._context.config.dpd_action is DpdAction.RESTART
        events = ike_sa_deleted_events(
            self._context,
            self._children,
            False,
            IkeSaDeleteReason.PEER_DEAD,
            restart,
        )
        self._emit(events, self._children.now)

    # -- requests we send --------------------------------------------------

    def _send_request(
        self, exchange: ExchangeType, tasks: list[Task], now: float
    ) -> None:
        payloads = [p for task in tasks for p in task.build_i()]
        if exchange is ExchangeType.IKE_SA_INIT and self._cookie is not None:
            # §2.6: a retry after INVALID_KE_PAYLOAD keeps the cookie first.
            payloads.insert(0, NotifyPayload(NotifyType.COOKIE, self._cookie))
        message = self._message(
            exchange, self._next_request_id, payloads, response=False
        )
        datagrams = self._encode(message)
        if exchange is ExchangeType.IKE_SA_INIT:
            self._context.init_request = datagrams[0]
        timeout = self._context.config.retransmit_timeout
        self._outstanding = _OutstandingRequest(
            self._next_request_id, exchange, tasks, datagrams, now + timeout
        )
        self._to_send.extend(datagrams)

    def _receive_response(self, data: bytes, header: IkeHeader, now: float) -> None:
        request = self._outstanding
        if request is None or header.message_id != request.message_id:
            self._drop("response to no outstanding request")
            return
        if header.is_initiator == self._context.is_original_initiator:
            self._drop("response with our own I flag")
            return
        if not self._spis_match(header, request.exchange_type):
            self._drop("response for other SPIs")
            return
        try:
            response = self._open(data, header, request.exchange_type)
        except IkeMessageDropped as dropped:
            self._drop(dropped.reason.value)
            return
        except IkeNotifyError as error:
            if request.exchange_type is ExchangeType.IKE_SA_INIT:
                self._ignore_init_response(request, error.reason)
            else:
                self._fail(error.notify_type, f"unreadable response: {error.reason}")
            return
        if response is None:
            return  # more fragments to come
        self._last_heard = now
        self._complete(request, response, data, now)

    def _complete(
        self,
        request: _OutstandingRequest,
        response: IkeMessage,
        data: bytes,
        now: float,
    ) -> None:
        error = _first_error(response)
        if request.exchange_type is ExchangeType.IKE_SA_INIT:
            self._complete_init(request, response, data, error, now)
            return
        # Later exchanges leave error Notifies to their tasks (§2.21.3).
        refused = error is not None and response.first(AuthPayload) is None
        if refused and request.exchange_type is ExchangeType.IKE_AUTH:
            self._fail(
                error.notify_type if error else None, "peer refused the exchange"
            )
            return
        self._outstanding = None
        self._next_request_id += 1
        try:
            for task in request.tasks:
                task.process_i(response)
        except IkeNotifyError as failure:
            self._fail(failure.notify_type, failure.reason)
            return
        self._finish(request, now)

    def _complete_init(
        self,
        request: _OutstandingRequest,
        response: IkeMessage,
        data: bytes,
        error: NotifyPayload | None,
        now: float,
    ) -> None:
        if error is not None:
            self._init_refused(error, now)
            return
        cookie = response.notify(NotifyType.COOKIE)
        if cookie is not None and response.first(SaPayload) is None:
            self._retry_with_cookie(request, cookie.notification_data, now)
            return
        if response.spi_r == _SPI_ZERO:
            self._ignore_init_response(request, "IKE_SA_INIT response without SPIr")
            return
        self._context.spi_r = response.spi_r
        self._context.init_response = data
        try:
            for task in request.tasks:
                task.process_i(response)
        except IkeNotifyError as failure:
            self._context.spi_r = _SPI_ZERO
            self._ignore_init_response(request, failure.reason)
            return
        self._outstanding = None
        self._next_request_id += 1
        self._finish(request, now)

    def _retry_with_cookie(
        self, request: _OutstandingRequest, cookie: bytes, now: float
    ) -> None:
        """§2.6: send the same IKE_SA_INIT again with N(COOKIE) first."""
        if not 1 <= len(cookie) <= _MAX_COOKIE_SIZE:
            self._ignore_init_response(request, "COOKIE of a bad size")
            return
        if self._cookie_retries >= _MAX_COOKIE_RETRIES:
            self._ignore_init_response(request, "too many COOKIE challenges")
            return
        self._cookie_retries += 1
        self._cookie = cookie

        # Same nonce and KEi: the payloads sent, minus any older cookie.
        sent = decode_message(request.datagrams[0])
        kept = [p for p in sent.payloads if not _is_cookie(p)]
        first = NotifyPayload(NotifyType.COOKIE, cookie)
        datagram = encode_message(replace(sent, payloads=(first, *kept)))
        self._context.init_request = datagram
        request.datagrams = [datagram]
        request.retransmissions = 0
        request.deadline = now + self._context.config.retransmit_timeout
        self._to_send.append(datagram)

    def _ignore_init_response(self, request: _OutstandingRequest, problem: str) -> None:
        # Anyone can forge an unprotected IKE_SA_INIT response: keep waiting
        # for the real one; the retransmission timer bounds the wait.
        request.last_problem = problem
        self._drop(f"unacceptable IKE_SA_INIT response: {problem}")

    def _finish(self, request: _OutstandingRequest, now: float) -> None:
        self._emit([e for task in request.tasks for e in task.outcome], now)
        self._advance(request.exchange_type, now)
        for task in request.tasks:
            if isinstance(task, IkeRekey) and not task.retrying:
                self._ike_rekey_done(task.result, now)
        self._send_pending(now)

    def _advance(self, finished: ExchangeType, now: float) -> None:
        if finished is ExchangeType.IKE_SA_INIT:
            context = self._context
            tasks: list[Task] = [
                IkeAuth(context),
                ChildCreate(context),
                InitialContact(context),
            ]
            self._send_request(ExchangeType.IKE_AUTH, tasks, now)
            self._set_state(IkeSaState.IKE_AUTH_SENT)
        elif finished is ExchangeType.IKE_AUTH and self._state is not IkeSaState.FAILED:
            self._established(now)

    def _init_refused(self, error: NotifyPayload, now: float) -> None:
        """C23: retry IKE_SA_INIT with the group the responder asked for."""
        config = self._context.config
        wanted = int.from_bytes(error.notification_data[:2])
        retry = (
            error.notify_type == NotifyType.INVALID_KE_PAYLOAD
            and len(error.notification_data) == 2
            and wanted in dh_groups(config.ike_proposals)
            and self._invalid_ke_retries < config.max_invalid_ke_retries
        )
        if not retry:
            self._fail(error.notify_type, "IKE_SA_INIT refused")
            return
        self._invalid_ke_retries += 1
        self._context.spi_r = _SPI_ZERO
        tasks = _init_tasks(IkeInit(self._context, wanted), self._context)
        self._send_request(ExchangeType.IKE_SA_INIT, tasks, now)

    # -- requests we answer ------------------------------------------------

    def _receive_request(self, data: bytes, header: IkeHeader, now: float) -> None:
        # RFC 7296 §2.1: a retransmitted request gets the same response again.
        if (
            header.message_id == self._next_peer_request_id - 1
            and self._cached_response
        ):
            # RFC 7383 §2.6.1: a fragmented request is answered again only
            # on its first fragment, not once per fragment.
            if not _is_later_fragment(data, header):
                self._to_send.extend(self._cached_response)
            return
        if header.message_id != self._next_peer_request_id:
            self._drop("request outside the window")
            return
        if self._state in (IkeSaState.FAILED, IkeSaState.DELETED):
            self._drop(f"IKE_SA {self._state.value}")
            return
        if header.is_initiator == self._context.is_original_initiator:
            self._drop("request with our own I flag")
            return
        tasks = self._responder_tasks(header)
        if tasks is None:
            self._drop(f"no {header.exchange_type} request expected now")
            return
        exchange = ExchangeType(header.exchange_type)
        if exchange is ExchangeType.IKE_SA_INIT:
            self._context.spi_i = header.spi_i
            self._context.init_request = data
        elif not self._spis_match(header, exchange):
            self._drop("request for other SPIs")
            return
        self._answer(data, header, exchange, tasks, now)

    def _responder_tasks(self, header: IkeHeader) -> list[Task] | None:
        exchange, state, context = header.exchange_type, self._state, self._context
        if exchange == ExchangeType.IKE_SA_INIT and state is IkeSaState.IDLE:
            return _init_tasks(IkeInit(context), context)
        if exchange == ExchangeType.IKE_AUTH and state is IkeSaState.IKE_SA_INIT_DONE:
            return [IkeAuth(context), ChildCreate(context), InitialContact(context)]
        if state not in (IkeSaState.ESTABLISHED, IkeSaState.REKEYED):
            return None
        if exchange == ExchangeType.INFORMATIONAL:
            reason = IkeSaDeleteReason.DELETED_BY_PEER
            if state is IkeSaState.REKEYED:
                reason = IkeSaDeleteReason.REKEYED
            elif self._redundant:
                reason = IkeSaDeleteReason.REDUNDANT
            return [InformationalResponder(context, self._children, reason)]
        if exchange == ExchangeType.CREATE_CHILD_SA:
            return [
                IkeRekeyResponder(context, self._ike_rekey_busy()),
                CreateChildSaResponder(context, self._children),
            ]
        return None

    def _ike_rekey_busy(self) -> str | None:
        """Why a rekey of this IKE_SA must wait (RFC 7296 §2.25.2), if it must."""
        if self._state is not IkeSaState.ESTABLISHED:
            return "the IKE_SA is being deleted"
        if self._awaiting_child_sas:
            return "the IKE_SA is not in use yet"
        request = self._outstanding
        queued = [t for _, tasks in self._children.pending for t in tasks]
        if any(
            isinstance(t, IkeDelete)
            for t in queued + (request.tasks if request else [])
        ):
            return "the IKE_SA is being deleted"
        child_work = (CreateChildSa, ChildDelete)
        if request and any(isinstance(t, child_work) for t in request.tasks):
            return "a CHILD_SA exchange is under way"
        return None

    def _answer(
        self,
        data: bytes,
        header: IkeHeader,
        exchange: ExchangeType,
        tasks: list[Task],
        now: float,
    ) -> None:
        try:
            request = self._open(data, header, exchange)
        except IkeMessageDropped as dropped:
            self._drop(dropped.reason.value)
            return
        except IkeNotifyError as error:
            self._refuse(header, exchange, error)
            return
        if request is None:
            return  # more fragments to come
        self._last_heard = now
        self._hand_over_before_delete(request, tasks, now)
        try:
            for task in tasks:
                task.process_r(request)
            payloads = [p for task in tasks for p in task.build_r()]
        except IkeNotifyError as error:
            self._refuse(header, exchange, error)
            return
        self._respond(header, exchange, payloads)
        if exchange is ExchangeType.IKE_SA_INIT:
            self._set_state(IkeSaState.IKE_SA_INIT_DONE)
        elif exchange is ExchangeType.IKE_AUTH:
            self._established(now)
        self._emit(self._hold_deletion([e for t in tasks for e in t.outcome]), now)
        for task in tasks:
            if isinstance(task, IkeRekeyResponder) and task.result is not None:
                self._ike_rekey_answered(task.result, now)
        self._send_pending(now)

    # -- IKE_SA rekeying (RFC 7296 §2.18, §2.8.1) ----------------------------

    def _established(self, now: float) -> None:
        self._last_heard = now
        rekey_time = self._context.config.ike_rekey_time
        if rekey_time is not None:
            jitter_draw = self._context.config.rand_time
            self._ike_rekey_at = now + rekey_time - jitter(self._context, jitter_draw)
        self._set_state(IkeSaState.ESTABLISHED)

    def _hand_over_before_delete(
        self, request: IkeMessage, tasks: list[Task], now: float
    ) -> None:
        """The peer won a collision and deletes this IKE_SA before our own
        response came: its new IKE_SA takes the CHILD_SAs first (§2.8.1).

        The deletion is reported once our response is in, so that we can
        still delete the redundant IKE_SA our exchange made on the peer.
        """
        collision = self._ike_collision
        deletes = request.all(DeletePayload)
        if collision is None or not any(
            d.protocol_id == ProtocolId.IKE for d in deletes
        ):
            return
        self._ike_collision = None
        self._hand_over(collision[0], now)
        for task in tasks:
            if isinstance(task, InformationalResponder):
                task.ike_delete_reason = IkeSaDeleteReason.REKEYED
        request_out = self._outstanding
        if request_out and any(isinstance(t, IkeRekey) for t in request_out.tasks):
            self._deferred_deletion = IkeSaDeleted(
                self.spi_i, self.spi_r, IkeSaDeleteReason.REKEYED
            )

    def _hold_deletion(self, events: list[IkeEvent]) -> list[IkeEvent]:
        if self._deferred_deletion is None:
            return events
        return [e for e in events if not isinstance(e, IkeSaDeleted)]

    def _ike_rekey_answered(self, result: RekeyedIkeSa, now: float) -> None:
        new = self._spawn(result, now)
        if self._own_ike_rekey:
            # Our own rekey is under way: our response decides (§2.8.1).
            self._ike_collision = (new, result.lowest_nonce)
        else:
            self._hand_over(new, now)

    def _ike_rekey_done(self, result: RekeyedIkeSa | None, now: float) -> None:
        self._own_ike_rekey = False
        deferred, self._deferred_deletion = self._deferred_deletion, None
        if deferred is not None:
            # We lost and the peer has deleted this IKE_SA already.
            if result is not None:
                self._spawn(result, now)._queue_delete(IkeSaDeleteReason.REDUNDANT, now)
            self._emit([deferred], now)
            return
        collision, self._ike_collision = self._ike_collision, None
        if result is None:
            if collision is not None:
                self._hand_over(collision[0], now)
            else:
                self._children.ike_rekeying = False
                self._retry_ike_rekey_later(now)
            return
        new = self._spawn(result, now)
        if collision is not None and result.lowest_nonce < collision[1]:
            # Our exchange holds the lowest nonce: our new IKE_SA goes, and
            # the peer deletes the old one.
            self._hand_over(collision[0], now)
            new._queue_delete(IkeSaDeleteReason.REDUNDANT, now)
            return
        if collision is not None:
            collision[0]._redundant = True
        self._hand_over(new, now)
        self._queue_delete(IkeSaDeleteReason.REKEYED, now)

    def _retry_ike_rekey_later(self, now: float) -> None:
        if self._context.config.ike_rekey_time is not None:
            self._ike_rekey_at = now + self._context.config.retransmit_timeout

    def _spawn(self, result: RekeyedIkeSa, now: float) -> IkeSa:
        """The IKE_SA a rekey exchange made, established from the start."""
        old = self._context
        local_spi = result.spi_i if result.is_original_initiator else result.spi_r
        new = IkeSa(
            old.config,
            is_initiator=result.is_original_initiator,
            local_spi=local_spi,
            random_bytes=old.random_bytes,
            local_endpoint=old.local_endpoint,
            remote_endpoint=old.remote_endpoint,
            spi_allocator=old.spi_allocator,
        )
        context = new._context
        context.spi_i, context.spi_r = result.spi_i, result.spi_r
        context.nonce_i, context.nonce_r = result.nonce_i, result.nonce_r
        context.suite, context.keys = result.suite, result.keys
        context.cipher_i, context.cipher_r = sk_ciphers(
            result.suite.transforms, result.keys
        )
        context.remote_id = old.remote_id
        context.fragmentation = old.fragmentation
        context.local_behind_nat = old.local_behind_nat
        context.remote_behind_nat = old.remote_behind_nat
        new._children.ike_rekeying = new._awaiting_child_sas = True
        new._established(now)
        self._events.append(IkeSaCreatedByRekey(result.spi_i, result.spi_r, new))
        return new

    def _hand_over(self, new: IkeSa, now: float) -> None:
        """Move the CHILD_SAs to ``new``; this IKE_SA only awaits its Delete."""
        self._children.move_to(new._children)
        new._children.ike_rekeying = new._awaiting_child_sas = False
        self._set_state(IkeSaState.REKEYED)
        context = self._context
        self._events.append(
            IkeSaRekeyed(context.spi_i, context.spi_r, new.spi_i, new.spi_r)
        )
        new._resume_child_work(now)

    def _resume_child_work(self, now: float) -> None:
        """Queue again, on this new IKE_SA, the CHILD_SA exchanges the old
        one had queued but not sent (their tasks hold the old SK_d)."""
        for child in self._children:
            if child.state is ChildSaState.REKEYING:
                self._queue_child_rekey(child)
            elif child.state is ChildSaState.DELETING:
                reason = ChildSaDeleteReason.DELETED_LOCALLY
                if child.successor is not None:
                    reason = ChildSaDeleteReason.REKEYED
                elif not child.outbound_active:
                    reason = ChildSaDeleteReason.REDUNDANT
                task = ChildDelete(
                    self._context, self._children, child.inbound_spi, reason
                )
                self._children.queue(ExchangeType.INFORMATIONAL, [task])
        self._send_pending(now)

    def _queue_delete(self, reason: IkeSaDeleteReason, now: float) -> None:
        self._children.pending.clear()
        task = IkeDelete(self._context, self._children, reason)
        self._children.queue(ExchangeType.INFORMATIONAL, [task])
        self._send_pending(now)

    def _respond(
        self, header: IkeHeader, exchange: ExchangeType, payloads: list[Payload]
    ) -> None:
        message = self._message(exchange, header.message_id, payloads, response=True)
        datagrams = self._encode(message)
        if exchange is ExchangeType.IKE_SA_INIT:
            self._context.init_response = datagrams[0]
        self._cached_response = datagrams
        self._next_peer_request_id += 1
        self._to_send.extend(datagrams)

    def _refuse(
        self, header: IkeHeader, exchange: ExchangeType, error: IkeNotifyError
    ) -> None:
        """Answer with the error Notify; the IKE_SA fails unless a retry can follow."""
        notify = NotifyPayload(error.notify_type, error.notification_data)
        if exchange is ExchangeType.IKE_SA_INIT:
            # Unprotected and stateless: SPIr stays zero, ID 0 stays open.
            message = IkeMessage(
                exchange,
                header.message_id,
                header.spi_i,
                _SPI_ZERO,
                is_initiator=False,
                is_response=True,
                payloads=(notify,),
            )
            self._to_send.append(encode_message(message))
            if not isinstance(error, InvalidKePayload):
                self._fail(error.notify_type, error.reason)
            return
        self._respond(header, exchange, [notify])
        if exchange is ExchangeType.IKE_AUTH:
            self._fail(error.notify_type, error.reason)

    # -- shared helpers ----------------------------------------------------

    def _message(
        self,
        exchange: ExchangeType,
        message_id: int,
        payloads: list[Payload],
        response: bool,
    ) -> IkeMessage:
        context = self._context
        return IkeMessage(
            exchange,
            message_id,
            context.spi_i,
            context.spi_r,
            is_initiator=context.is_original_initiator,
            is_response=response,
            payloads=tuple(payloads),
        )

    def _encode(self, message: IkeMessage) -> list[bytes]:
        if message.exchange_type == ExchangeType.IKE_SA_INIT:
            return [encode_message(message)]
        cipher = self._context.cipher_out
        if cipher is None:
            raise RuntimeError("no keys to protect the message")
        limit = message_size_limit(self._context)
        return protect_message(message, cipher, self._context.random_bytes, limit)

    def _open(
        self, data: bytes, header: IkeHeader, exchange: ExchangeType
    ) -> IkeMessage | None:
        """Decode, and verify and decrypt everything after IKE_SA_INIT.

        None means a fragment was taken and the message is not whole yet.
        """
        message = decode_message(data)
        if exchange is ExchangeType.IKE_SA_INIT:
            return message
        cipher = self._context.cipher_in
        if cipher is None or not message.payloads:
            raise InvalidSyntax("protected exchange without keys or payloads")
        last = message.payloads[-1]
        if isinstance(last, EncryptedFragmentPayload) and self._context.fragmentation:
            reassembler = self._reassemblers.get(header.is_response)
            if reassembler is None:
                reassembler = FragmentReassembler(cipher)
                self._reassemblers[header.is_response] = reassembler
            return reassembler.add(data, message)
        if not isinstance(last, EncryptedPayload):
            raise InvalidSyntax(f"{exchange.name} without an Encrypted payload")
        return decrypt_message(data, message, cipher)

    def _spis_match(self, header: IkeHeader, exchange: ExchangeType) -> bool:
        if header.spi_i != self._context.spi_i:
            return False
        if exchange is ExchangeType.IKE_SA_INIT:
            return True  # the responder's SPI is learnt from this response
        return header.spi_r == self._context.spi_r

    def _set_state(self, state: IkeSaState) -> None:
        logger.debug(
            "%s_%s: %s -> %s",
            self._context.spi_i.hex(),
            self._context.spi_r.hex(),
            self._state.value,
            state.value,
        )
        self._state = state

    def _fail(self, notify_type: NotifyType | int | None, reason: str) -> None:
        self._outstanding = None
        self._events.append(IkeSaFailed(notify_type, reason))
        self._set_state(IkeSaState.FAILED)

    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1


def _init_tasks(ike_init: IkeInit, context: IkeSaContext) -> list[Task]:
    return [
        ike_init,
        IkeNatd(context),
        IkeFragmentation(context),
        IkeCertPre(context),
    ]


def _is_later_fragment(data: bytes, header: IkeHeader) -> bool:
    # The Fragment Number follows the IKE header and the generic payload
    # header (RFC 7383 §2.5).
    number = data[32:34]
    return header.next_payload == PayloadType.SKF and number != b"\x00\x01"


def _is_cookie(payload: Payload) -> bool:
    return (
        isinstance(payload, NotifyPayload) and payload.notify_type == NotifyType.COOKIE
    )


def _first_error(message: IkeMessage) -> NotifyPayload | None:
    return next((n for n in message.all(NotifyPayload) if n.is_error), None)
