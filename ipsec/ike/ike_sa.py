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

Once established, CREATE_CHILD_SA and INFORMATIONAL exchanges (rekeying,
Delete, liveness; ``tasks/child_rekey.py``, ``child_delete.py``,
``ike_delete.py``, ``ike_dpd.py``) queue behind the one outstanding request.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum

from .child_sa import ChildSa, ChildSaState, ChildSaTable, soft_lifetime
from .config import DpdAction, IkeSaConfig
from .constants import ExchangeType, NotifyType
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
    IkeSaDeleted,
    IkeSaDeleteReason,
    IkeSaFailed,
)
from .keymat import IkeSaKeys, IkeSaTransforms
from .message import (
    IkeHeader,
    IkeMessage,
    decode_header,
    decode_message,
    decrypt_message,
    encode_message,
    protect_message,
)
from .payloads import AuthPayload, EncryptedPayload, NotifyPayload, Payload
from .proposals import dh_groups
from .tasks import (
    ChildCreate,
    IkeAuth,
    IkeInit,
    IkeNatd,
    IkeSaContext,
    Task,
)
from .tasks.base import Endpoint
from .tasks.child_delete import ChildDelete, InformationalResponder
from .tasks.child_rekey import CreateChildSa, CreateChildSaResponder
from .tasks.ike_delete import IkeDelete, ike_sa_deleted_events
from .tasks.ike_dpd import InitialContact, LivenessCheck

logger = logging.getLogger("ipsec.ike")

_SPI_ZERO = bytes(8)


class IkeSaState(Enum):
    IDLE = "idle"
    IKE_SA_INIT_SENT = "IKE_SA_INIT sent"
    IKE_SA_INIT_DONE = "IKE_SA_INIT done, awaiting IKE_AUTH"
    IKE_AUTH_SENT = "IKE_AUTH sent"
    ESTABLISHED = "established"
    FAILED = "failed"
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
    ) -> None:
        """``local_spi`` is our 8-octet IKE SPI (SPIi or SPIr by role).

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
        )
        self._state = IkeSaState.IDLE
        self._outstanding: _OutstandingRequest | None = None
        self._next_request_id = 0
        self._next_peer_request_id = 0
        self._cached_response: list[bytes] = []
        self._invalid_ke_retries = 0
        self._to_send: list[bytes] = []
        self._events: deque[IkeEvent] = deque()
        self._children = ChildSaTable()
        self._last_heard = 0.0
        """When the last authenticated message came from the peer."""
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
        tasks: list[Task] = [IkeInit(self._context), IkeNatd(self._context)]
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
            delay = self._context.config.dpd_delay
            if delay is not None and self._outstanding is None:
                deadlines.append(self._last_heard + delay)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Retransmit or give up (RFC 7296 §2.1), then start what is due."""
        self._children.now = now
        request = self._outstanding
        if request is not None and now >= request.deadline:
            self._retransmit(request, now)
        if self._state is IkeSaState.ESTABLISHED:
            self._start_due_exchanges(now)

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

    def _queue_child_rekey(self, child: ChildSa) -> None:
        # Marked now, so that the peer's rekey of it counts as a collision.
        child.state, child.rekey_at = ChildSaState.REKEYING, None
        task = CreateChildSa(self._context, self._children, child)
        self._children.queue(ExchangeType.CREATE_CHILD_SA, [task])

    def _start_due_exchanges(self, now: float) -> None:
        for child in self._children:
            due = child.rekey_at is not None and now >= child.rekey_at
            if due and child.state is ChildSaState.INSTALLED:
                self._queue_child_rekey(child)
        delay = self._context.config.dpd_delay
        idle = self._outstanding is None and not self._children.pending
        if delay is not None and idle and now >= self._last_heard + delay:
            # RFC 7296 §1.4: an empty INFORMATIONAL request checks liveness.
            task = LivenessCheck(self._context)
            self._children.queue(ExchangeType.INFORMATIONAL, [task])
        self._send_pending(now)

    def _send_pending(self, now: float) -> None:
        """Send the next queued request once the window is free (§2.3)."""
        if self._outstanding is not None or self._state is not IkeSaState.ESTABLISHED:
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
        if self._state is not IkeSaState.ESTABLISHED:
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

    def _ignore_init_response(self, request: _OutstandingRequest, problem: str) -> None:
        # Anyone can forge an unprotected IKE_SA_INIT response: keep waiting
        # for the real one; the retransmission timer bounds the wait.
        request.last_problem = problem
        self._drop(f"unacceptable IKE_SA_INIT response: {problem}")

    def _finish(self, request: _OutstandingRequest, now: float) -> None:
        self._emit([e for task in request.tasks for e in task.outcome], now)
        self._advance(request.exchange_type, now)
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
            self._last_heard = now
            self._set_state(IkeSaState.ESTABLISHED)

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
        tasks: list[Task] = [IkeInit(self._context, wanted), IkeNatd(self._context)]
        self._send_request(ExchangeType.IKE_SA_INIT, tasks, now)

    # -- requests we answer ------------------------------------------------

    def _receive_request(self, data: bytes, header: IkeHeader, now: float) -> None:
        # RFC 7296 §2.1: a retransmitted request gets the same response again.
        if (
            header.message_id == self._next_peer_request_id - 1
            and self._cached_response
        ):
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
            return [IkeInit(context), IkeNatd(context)]
        if exchange == ExchangeType.IKE_AUTH and state is IkeSaState.IKE_SA_INIT_DONE:
            return [IkeAuth(context), ChildCreate(context), InitialContact(context)]
        if state is not IkeSaState.ESTABLISHED:
            return None
        if exchange == ExchangeType.INFORMATIONAL:
            return [InformationalResponder(context, self._children)]
        if exchange == ExchangeType.CREATE_CHILD_SA:
            return [CreateChildSaResponder(context, self._children)]
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
        self._last_heard = now
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
            self._set_state(IkeSaState.ESTABLISHED)
        self._emit([e for task in tasks for e in task.outcome], now)
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
        return protect_message(message, cipher, self._context.random_bytes)

    def _open(
        self, data: bytes, header: IkeHeader, exchange: ExchangeType
    ) -> IkeMessage:
        """Decode, and verify and decrypt everything after IKE_SA_INIT."""
        message = decode_message(data)
        if exchange is ExchangeType.IKE_SA_INIT:
            return message
        cipher = self._context.cipher_in
        if cipher is None or not message.payloads:
            raise InvalidSyntax("protected exchange without keys or payloads")
        if not isinstance(message.payloads[-1], EncryptedPayload):
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


def _first_error(message: IkeMessage) -> NotifyPayload | None:
    return next((n for n in message.all(NotifyPayload) if n.is_error), None)
