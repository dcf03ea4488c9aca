"""The SIP transaction layer (RFC 3261 §17 as corrected by RFC 6026), sans-IO.

Four state machines share one engine: INVITE client (Calling, Proceeding,
Accepted, Completed), non-INVITE client (Trying, Proceeding, Completed),
INVITE server (Proceeding, Accepted, Completed, Confirmed) and non-INVITE
server (Trying, Proceeding, Completed); each ends in Terminated.  Their
transitions are the tables below, one row per arrow of the RFC figures.

The layer never touches a socket or a clock.  The glue feeds it received
messages and transport errors with the current time, calls `handle_timer`
when the deadline from `next_timer` passes, sends what `datagrams_to_send`
returns, and hands `next_event` results to the transaction user (TU).

Merged requests (RFC 3261 §8.2.2.2: same From tag, Call-ID and CSeq through
another branch) open their own transaction here; detecting them, and answering
482, is the TU's job.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections import deque
from dataclasses import dataclass, replace
from typing import NamedTuple

from sbc.log import TRANSACTION_LOGGER, with_context
from sbc.sip.events import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponseReceived,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
    TransportErrorOccurred,
)
from sbc.sip.headers import Via
from sbc.sip.message import Request, Response, make_response
from sbc.sip.requests import build_ack_for_non_2xx, build_cancel
from sbc.sip.timers import (
    DEFAULT_TIMERS,
    Timer,
    TimerValues,
    initial_interval,
    is_reliable,
    retransmit_interval,
)

log = logging.getLogger(TRANSACTION_LOGGER)

Address = tuple[str, int]

# Branch values are compared case-insensitively, like every parameter value
# not defined otherwise (RFC 3261 §7.3.1), so keys hold them lowercased.
_MAGIC_COOKIE = "z9hg4bk"


class TransactionError(Exception):
    """The TU asked for something the transaction layer cannot do."""


class TransactionNotFound(TransactionError):
    """No transaction has that key (it may have terminated already)."""


class ResponseNotAllowed(TransactionError):
    """The server transaction's state forbids that response (e.g. a second final)."""


# -- Keys -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientTransactionKey:
    """Matches responses to a client transaction (RFC 3261 §17.1.3)."""

    branch: str
    """The top Via branch of the request, lowercased."""
    method: str
    """The CSeq method: a CANCEL shares the INVITE's branch but not its method."""


@dataclass(frozen=True, slots=True)
class Rfc2543Match:
    """What identifies a request from a peer without magic-cookie branches.

    RFC 3261 §17.2.3 falls back to Request-URI, tags, Call-ID, CSeq and top
    Via when the branch lacks the cookie.
    """

    request_uri: str
    from_tag: str | None
    to_tag: str | None
    call_id: str
    cseq: int
    top_via: str


@dataclass(frozen=True, slots=True)
class ServerTransactionKey:
    """Matches requests to a server transaction (RFC 3261 §17.2.3)."""

    method: str
    """The request method, INVITE for an ACK (it belongs to the INVITE)."""
    sent_by: Address
    """The top Via sent-by, host lowercased, port defaulted per transport."""
    branch: str | None
    """The magic-cookie branch, lowercased; None for an RFC 2543 peer."""
    rfc2543: Rfc2543Match | None = None
    """The fallback identity when `branch` is None."""


TransactionKey = ClientTransactionKey | ServerTransactionKey


class Transmission(NamedTuple):
    """One message for the transport layer to send."""

    data: bytes
    destination: Address
    transport: str


# -- States, inputs and transition tables -----------------------------------


class _FastHashEnum(enum.Enum):
    # Enum hashes by name in Python code; members are singletons, so hashing
    # by identity is equivalent and keeps the per-message table look-ups cheap.
    __hash__ = object.__hash__


class State(_FastHashEnum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Kind(_FastHashEnum):
    INVITE_CLIENT = "INVITE client"
    NON_INVITE_CLIENT = "non-INVITE client"
    INVITE_SERVER = "INVITE server"
    NON_INVITE_SERVER = "non-INVITE server"


class Trigger(_FastHashEnum):
    """A transition's cause other than a timer, named as on the RFC figures."""

    PROVISIONAL = "1xx from TL"
    SUCCESS = "2xx from TL"
    FAILURE = "300-699 from TL"
    REQUEST = "request retransmission from TL"
    ACK = "ACK from TL"
    TRANSPORT_ERROR = "Transport Err."
    SEND_PROVISIONAL = "1xx from TU"
    SEND_SUCCESS = "2xx from TU"
    SEND_FAILURE = "300-699 from TU"


Stimulus = Trigger | Timer


class Action(enum.Enum):
    PASS_RESPONSE = "pass response to TU"
    SEND_ACK = "send ACK"
    SEND_DEFERRED_CANCEL = "send the CANCEL held back until a 1xx"
    RETRANSMIT_REQUEST = "retransmit request"
    SEND_RESPONSE = "send response"
    RESEND_RESPONSE = "resend last response"
    PASS_ACK = "pass ACK to TU"
    REPORT_TIMEOUT = "inform TU of timeout"
    REPORT_TRANSPORT_ERROR = "inform TU of transport error"


class Transition(NamedTuple):
    next_state: State
    actions: tuple[Action, ...] = ()


_S = State
_T = Trigger
_A = Action

# RFC 3261 Figure 5 with the Accepted state RFC 6026 adds to §17.1.1.2.
INVITE_CLIENT_TRANSITIONS: dict[tuple[State, Stimulus], Transition] = {
    (_S.CALLING, Timer.A): Transition(_S.CALLING, (_A.RETRANSMIT_REQUEST,)),
    (_S.CALLING, Timer.B): Transition(_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
    (_S.CALLING, _T.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)
    ),
    (_S.CALLING, _T.PROVISIONAL): Transition(
        _S.PROCEEDING, (_A.PASS_RESPONSE, _A.SEND_DEFERRED_CANCEL)
    ),
    (_S.CALLING, _T.SUCCESS): Transition(_S.ACCEPTED, (_A.PASS_RESPONSE,)),
    (_S.CALLING, _T.FAILURE): Transition(_S.COMPLETED, (_A.PASS_RESPONSE, _A.SEND_ACK)),
    (_S.PROCEEDING, _T.PROVISIONAL): Transition(_S.PROCEEDING, (_A.PASS_RESPONSE,)),
    (_S.PROCEEDING, _T.SUCCESS): Transition(_S.ACCEPTED, (_A.PASS_RESPONSE,)),
    (_S.PROCEEDING, _T.FAILURE): Transition(
        _S.COMPLETED, (_A.PASS_RESPONSE, _A.SEND_ACK)
    ),
    (_S.PROCEEDING, Timer.CANCEL): Transition(_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
    (_S.COMPLETED, _T.FAILURE): Transition(_S.COMPLETED, (_A.SEND_ACK,)),
    (_S.COMPLETED, _T.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)
    ),
    (_S.COMPLETED, Timer.D): Transition(_S.TERMINATED),
    (_S.ACCEPTED, _T.SUCCESS): Transition(_S.ACCEPTED, (_A.PASS_RESPONSE,)),
    (_S.ACCEPTED, Timer.M): Transition(_S.TERMINATED),
}

# RFC 3261 Figure 6.
NON_INVITE_CLIENT_TRANSITIONS: dict[tuple[State, Stimulus], Transition] = {
    (_S.TRYING, Timer.E): Transition(_S.TRYING, (_A.RETRANSMIT_REQUEST,)),
    (_S.TRYING, Timer.F): Transition(_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
    (_S.TRYING, _T.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)
    ),
    (_S.TRYING, _T.PROVISIONAL): Transition(_S.PROCEEDING, (_A.PASS_RESPONSE,)),
    (_S.TRYING, _T.SUCCESS): Transition(_S.COMPLETED, (_A.PASS_RESPONSE,)),
    (_S.TRYING, _T.FAILURE): Transition(_S.COMPLETED, (_A.PASS_RESPONSE,)),
    (_S.PROCEEDING, Timer.E): Transition(_S.PROCEEDING, (_A.RETRANSMIT_REQUEST,)),
    (_S.PROCEEDING, Timer.F): Transition(_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
    (_S.PROCEEDING, _T.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)
    ),
    (_S.PROCEEDING, _T.PROVISIONAL): Transition(_S.PROCEEDING, (_A.PASS_RESPONSE,)),
    (_S.PROCEEDING, _T.SUCCESS): Transition(_S.COMPLETED, (_A.PASS_RESPONSE,)),
    (_S.PROCEEDING, _T.FAILURE): Transition(_S.COMPLETED, (_A.PASS_RESPONSE,)),
    (_S.COMPLETED, Timer.K): Transition(_S.TERMINATED),
}

# RFC 3261 Figure 7 with the Accepted state RFC 6026 adds to §17.2.1.
INVITE_SERVER_TRANSITIONS: dict[tuple[State, Stimulus], Transition] = {
    (_S.PROCEEDING, _T.REQUEST): Transition(_S.PROCEEDING, (_A.RESEND_RESPONSE,)),
    (_S.PROCEEDING, _T.SEND_PROVISIONAL): Transition(
        _S.PROCEEDING, (_A.SEND_RESPONSE,)
    ),
    (_S.PROCEEDING, _T.SEND_SUCCESS): Transition(_S.ACCEPTED, (_A.SEND_RESPONSE,)),
    (_S.PROCEEDING, _T.SEND_FAILURE): Transition(_S.COMPLETED, (_A.SEND_RESPONSE,)),
    (_S.PROCEEDING, _T.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)
    ),
    (_S.COMPLETED, _T.REQUEST): Transition(_S.COMPLETED, (_A.RESEND_RESPONSE,)),
    (_S.COMPLETED, Timer.G): Transition(_S.COMPLETED, (_A.RESEND_RESPONSE,)),
    (_S.COMPLETED, _T.ACK): Transition(_S.CONFIRMED),
    (_S.COMPLETED, Timer.H): Transition(_S.TERMINATED, (_A.REPORT_TIMEOUT,)),
    (_S.COMPLETED, _T.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)
    ),
    (_S.CONFIRMED, Timer.I): Transition(_S.TERMINATED),
    # Accepted absorbs INVITE retransmissions (no row) and leaves 2xx
    # retransmission to the TU, whose ACKs it passes up (RFC 6026 on §17.2.1).
    (_S.ACCEPTED, _T.ACK): Transition(_S.ACCEPTED, (_A.PASS_ACK,)),
    (_S.ACCEPTED, _T.SEND_SUCCESS): Transition(_S.ACCEPTED, (_A.SEND_RESPONSE,)),
    (_S.ACCEPTED, _T.TRANSPORT_ERROR): Transition(
        _S.ACCEPTED, (_A.REPORT_TRANSPORT_ERROR,)
    ),
    (_S.ACCEPTED, Timer.L): Transition(_S.TERMINATED),
}

# RFC 3261 Figure 8.
NON_INVITE_SERVER_TRANSITIONS: dict[tuple[State, Stimulus], Transition] = {
    (_S.TRYING, _T.SEND_PROVISIONAL): Transition(_S.PROCEEDING, (_A.SEND_RESPONSE,)),
    (_S.TRYING, _T.SEND_SUCCESS): Transition(_S.COMPLETED, (_A.SEND_RESPONSE,)),
    (_S.TRYING, _T.SEND_FAILURE): Transition(_S.COMPLETED, (_A.SEND_RESPONSE,)),
    (_S.PROCEEDING, _T.SEND_PROVISIONAL): Transition(
        _S.PROCEEDING, (_A.SEND_RESPONSE,)
    ),
    (_S.PROCEEDING, _T.SEND_SUCCESS): Transition(_S.COMPLETED, (_A.SEND_RESPONSE,)),
    (_S.PROCEEDING, _T.SEND_FAILURE): Transition(_S.COMPLETED, (_A.SEND_RESPONSE,)),
    (_S.PROCEEDING, _T.REQUEST): Transition(_S.PROCEEDING, (_A.RESEND_RESPONSE,)),
    (_S.PROCEEDING, _T.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)
    ),
    (_S.COMPLETED, _T.REQUEST): Transition(_S.COMPLETED, (_A.RESEND_RESPONSE,)),
    (_S.COMPLETED, _T.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (_A.REPORT_TRANSPORT_ERROR,)
    ),
    (_S.COMPLETED, Timer.J): Transition(_S.TERMINATED),
}

TRANSITIONS: dict[Kind, dict[tuple[State, Stimulus], Transition]] = {
    Kind.INVITE_CLIENT: INVITE_CLIENT_TRANSITIONS,
    Kind.NON_INVITE_CLIENT: NON_INVITE_CLIENT_TRANSITIONS,
    Kind.INVITE_SERVER: INVITE_SERVER_TRANSITIONS,
    Kind.NON_INVITE_SERVER: NON_INVITE_SERVER_TRANSITIONS,
}

INITIAL_STATE: dict[Kind, State] = {
    Kind.INVITE_CLIENT: _S.CALLING,
    Kind.NON_INVITE_CLIENT: _S.TRYING,
    Kind.INVITE_SERVER: _S.PROCEEDING,
    Kind.NON_INVITE_SERVER: _S.TRYING,
}

# The timers that run in each state: entering a state starts those not yet
# running, leaving it stops those the next state does not list.  Timer E
# and F run on from Trying into Proceeding (RFC 3261 §17.1.2.2).
STATE_TIMERS: dict[tuple[Kind, State], tuple[Timer, ...]] = {
    (Kind.INVITE_CLIENT, _S.CALLING): (Timer.B, Timer.A),
    (Kind.INVITE_CLIENT, _S.PROCEEDING): (Timer.CANCEL,),
    (Kind.INVITE_CLIENT, _S.COMPLETED): (Timer.D,),
    (Kind.INVITE_CLIENT, _S.ACCEPTED): (Timer.M,),
    (Kind.NON_INVITE_CLIENT, _S.TRYING): (Timer.F, Timer.E),
    (Kind.NON_INVITE_CLIENT, _S.PROCEEDING): (Timer.F, Timer.E),
    (Kind.NON_INVITE_CLIENT, _S.COMPLETED): (Timer.K,),
    (Kind.INVITE_SERVER, _S.COMPLETED): (Timer.H, Timer.G),
    (Kind.INVITE_SERVER, _S.CONFIRMED): (Timer.I,),
    (Kind.INVITE_SERVER, _S.ACCEPTED): (Timer.L,),
    (Kind.NON_INVITE_SERVER, _S.COMPLETED): (Timer.J,),
}


# -- Transactions -------------------------------------------------------------


class _ArmedTimer(NamedTuple):
    sequence: int
    interval: float


class _Transaction:
    """One transaction's state; the layer drives it through the tables."""

    __slots__ = (
        "kind",
        "key",
        "state",
        "request",
        "identity",
        "transport",
        "reliable",
        "destination",
        "request_bytes",
        "last_response",
        "final_to_tag",
        "ack_bytes",
        "cancel_deferred",
        "cancel_sent",
        "timers",
    )

    def __init__(
        self,
        kind: Kind,
        key: TransactionKey,
        request: Request | None,
        destination: Address,
        transport: str,
        identity: tuple[str, str | None],
    ) -> None:
        self.kind = kind
        self.key = key
        self.state = INITIAL_STATE[kind]
        # Kept by client transactions only, which build ACK and CANCEL from
        # it; a server transaction lives on for up to 64*T1 after its final
        # response, needing nothing but the bytes to resend.
        self.request = request
        # Call-ID and branch as received or sent, for the log.
        self.identity = identity
        self.transport = transport
        self.reliable = is_reliable(transport)
        # Where this transaction's requests (client) or responses (server) go.
        self.destination = destination
        self.request_bytes = b""
        self.last_response: bytes | None = None
        self.final_to_tag: str | None = None
        self.ack_bytes: bytes | None = None
        self.cancel_deferred = False
        self.cancel_sent = False
        self.timers: dict[Timer, _ArmedTimer] = {}


class TransactionLayer:
    """All client and server transactions of one SIP element.

    Args:
        timers: T1, T2, T4 and Timer D, from which every timer is derived.
        send_trying: answer each new INVITE with 100 (Trying) at once, as
            RFC 3261 §17.2.1 asks unless the TU will answer within 200 ms.
    """

    def __init__(
        self, timers: TimerValues = DEFAULT_TIMERS, *, send_trying: bool = True
    ) -> None:
        self.timers = timers
        self.send_trying = send_trying
        self._clients: dict[ClientTransactionKey, _Transaction] = {}
        self._servers: dict[ServerTransactionKey, _Transaction] = {}
        # CANCEL matches any method but ACK and CANCEL (§9.2): index the
        # server transactions by key without the method.
        self._cancellable: dict[tuple[object, ...], ServerTransactionKey] = {}
        self._events: deque[TransactionEvent] = deque()
        self._outbox: list[Transmission] = []
        # Heap of (deadline, tie-break, sequence, transaction, timer); entries
        # whose sequence no longer matches the transaction's are stale.
        self._heap: list[tuple[float, int, int, _Transaction, Timer]] = []
        self._sequence = 0
        self._armed = 0

    # -- The glue's side -----------------------------------------------------

    def receive_request(
        self, request: Request, source: Address, transport: str, now: float
    ) -> None:
        """A request validated by the transport layer (RFC 3261 §17.2.3)."""
        transport = transport.upper()
        if request.method == "ACK":
            self._receive_ack(request, source, transport, now)
            return

        # A known key is a retransmission, which its transaction absorbs.
        key = server_key(request)
        transaction = self._servers.get(key)
        if transaction is not None:
            self._fire(transaction, Trigger.REQUEST, now)
            return

        transaction = self._open_server(request, key, source, transport)
        if request.method == "CANCEL":
            self._events.append(self._cancel_received(request, key, source, transport))
        else:
            self._events.append(RequestReceived(request, key, source, transport))
        if request.method == "INVITE" and self.send_trying:
            trying = make_response(request, 100)
            self._fire(transaction, Trigger.SEND_PROVISIONAL, now, trying)

    def receive_response(
        self, response: Response, source: Address, transport: str, now: float
    ) -> None:
        """A response validated by the transport layer (RFC 3261 §17.1.3)."""
        key = client_key(response)
        transaction = self._clients.get(key) if key is not None else None
        if transaction is None:
            self._events.append(
                StrayResponseReceived(response, source, transport.upper())
            )
            return
        self._fire(
            transaction, _response_trigger(response.status), now, response, source
        )

    def report_transport_error(
        self, destination: Address, transport: str, now: float
    ) -> None:
        """The transport could not send to `destination`; fail its transactions."""
        transport = transport.upper()
        affected = [
            transaction
            for table in (self._clients, self._servers)
            for transaction in table.values()
            if transaction.destination == destination
            and transaction.transport == transport
        ]
        for transaction in affected:
            if transaction.state is not State.TERMINATED:
                self._fire(transaction, Trigger.TRANSPORT_ERROR, now)

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is at or before `now`."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, sequence, transaction, timer = heapq.heappop(heap)
            armed = transaction.timers.get(timer)
            if armed is None or armed.sequence != sequence:
                continue
            del transaction.timers[timer]
            self._armed -= 1
            self._on_timer(transaction, timer, armed.interval, now)

    def next_timer(self) -> float | None:
        """The earliest deadline the glue must call `handle_timer` at, if any."""
        heap = self._heap
        while heap:
            _, _, sequence, transaction, timer = heap[0]
            armed = transaction.timers.get(timer)
            if armed is not None and armed.sequence == sequence:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def datagrams_to_send(self) -> list[Transmission]:
        """Messages to send since the last call, oldest first."""
        outbox, self._outbox = self._outbox, []
        return outbox

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    # -- The TU's side ---------------------------------------------------------

    def send_request(
        self, request: Request, destination: Address, transport: str, now: float
    ) -> ClientTransactionKey:
        """Open a client transaction; the request's top Via must carry a new branch."""
        if request.method == "ACK":
            raise TransactionError("an ACK opens no transaction: use send_stateless")
        key = client_key_of_request(request)
        if key in self._clients:
            raise TransactionError(f"branch {key.branch} already in use")

        transport = transport.upper()
        kind = (
            Kind.INVITE_CLIENT if request.method == "INVITE" else Kind.NON_INVITE_CLIENT
        )
        transaction = _Transaction(
            kind, key, request, destination, transport, _identity(request)
        )
        transaction.request_bytes = request.to_bytes()
        self._clients[key] = transaction
        self._send(transaction, transaction.request_bytes)
        self._start_state_timers(transaction, now)
        return key

    def send_response(
        self,
        response: Response,
        now: float,
        *,
        key: ServerTransactionKey | None = None,
    ) -> None:
        """Send a response through its server transaction.

        `key` is the one from RequestReceived; without it the key is read
        from the response, which works for magic-cookie branches only.  A 2xx
        to an INVITE whose transaction has ended is the TU retransmitting it
        (RFC 6026 on §17.2.1): it goes straight to the transport.
        """
        if key is None:
            key = server_key_of_response(response)
        transaction = self._servers.get(key)
        if transaction is None:
            if 200 <= response.status < 300 and key.method == "INVITE":
                via = response.top_via
                self.send_stateless(response, response_destination(via), via.transport)
                return
            raise TransactionNotFound(f"no server transaction for {key}")

        trigger = _tu_trigger(response.status)
        if (transaction.state, trigger) not in TRANSITIONS[transaction.kind]:
            raise ResponseNotAllowed(
                f"{transaction.kind.value} transaction in {transaction.state.value} "
                f"cannot send {response.status}"
            )
        self._fire(transaction, trigger, now, response)

    def cancel(
        self, invite_key: ClientTransactionKey, now: float
    ) -> ClientTransactionKey | None:
        """Cancel a pending INVITE client transaction (RFC 3261 §9.1).

        Returns the key of the CANCEL's own client transaction, or None when
        the INVITE is unknown or already has a final response (CANCEL SHOULD
        NOT be sent then).  Before any provisional response the CANCEL MUST
        NOT be sent: it is held back and sent when the first 1xx arrives, and
        dropped if a final response or Timer B comes first.  If no final
        response follows within 64*T1 of the CANCEL, the INVITE transaction
        ends with TransactionTimedOut(Timer.CANCEL).
        """
        transaction = self._clients.get(invite_key)
        if transaction is None or transaction.kind is not Kind.INVITE_CLIENT:
            return None
        cancel_key = ClientTransactionKey(invite_key.branch, "CANCEL")
        if transaction.state is State.CALLING:
            transaction.cancel_deferred = True
            return cancel_key
        if transaction.state is not State.PROCEEDING:
            return None
        # One CANCEL per INVITE (§9.1), even after its own transaction ended:
        # a second would also push back the 64*T1 wait for the final response.
        if not transaction.cancel_sent:
            self._send_cancel(transaction, now)
        return cancel_key

    def send_stateless(
        self, message: Request | Response, destination: Address, transport: str
    ) -> None:
        """Send outside any transaction: an ACK for a 2xx, a stateless response."""
        self._outbox.append(
            Transmission(message.to_bytes(), destination, transport.upper())
        )

    def state(self, key: TransactionKey) -> State | None:
        """The state of a live transaction, or None once it has terminated."""
        if isinstance(key, ClientTransactionKey):
            transaction = self._clients.get(key)
        else:
            transaction = self._servers.get(key)
        return transaction.state if transaction is not None else None

    def __len__(self) -> int:
        """How many transactions are alive (client and server)."""
        return len(self._clients) + len(self._servers)

    # -- Matching helpers ------------------------------------------------------

    def _receive_ack(
        self, request: Request, source: Address, transport: str, now: float
    ) -> None:
        transaction = self._match_ack(request)
        if transaction is None:
            # An ACK for a 2xx: a transaction of its own for the TU (§17.2.3).
            self._events.append(AckReceived(request, source, transport, None))
            return
        self._fire(transaction, Trigger.ACK, now, request, source)

    def _match_ack(self, ack: Request) -> _Transaction | None:
        key = server_key(ack)
        transaction = self._servers.get(key)
        if transaction is not None or key.rfc2543 is None:
            return transaction

        # RFC 2543: the ACK's To tag is the one our final response added, which
        # the INVITE (outside a dialog) did not carry.
        invite_identity = _replace_to_tag(key.rfc2543, None)
        transaction = self._servers.get(
            ServerTransactionKey("INVITE", key.sent_by, None, invite_identity)
        )
        if transaction is not None and transaction.final_to_tag == key.rfc2543.to_tag:
            return transaction
        return None

    def _cancel_received(
        self,
        cancel: Request,
        key: ServerTransactionKey,
        source: Address,
        transport: str,
    ) -> CancelReceived:
        cancelled_key = self._cancellable.get(_without_method(key))
        pending = False
        if cancelled_key is not None:
            target = self._servers[cancelled_key]
            pending = target.state in (State.TRYING, State.PROCEEDING)
        return CancelReceived(cancel, key, source, transport, cancelled_key, pending)

    # -- The engine ----------------------------------------------------------------

    def _open_server(
        self,
        request: Request,
        key: ServerTransactionKey,
        source: Address,
        transport: str,
    ) -> _Transaction:
        kind = (
            Kind.INVITE_SERVER if request.method == "INVITE" else Kind.NON_INVITE_SERVER
        )
        destination = response_destination(request.top_via, source, transport)
        transaction = _Transaction(
            kind, key, None, destination, transport, _identity(request)
        )
        self._servers[key] = transaction
        if request.method != "CANCEL":
            self._cancellable.setdefault(_without_method(key), key)
        return transaction

    def _fire(
        self,
        transaction: _Transaction,
        stimulus: Stimulus,
        now: float,
        message: Request | Response | None = None,
        source: Address | None = None,
    ) -> None:
        transition = TRANSITIONS[transaction.kind].get((transaction.state, stimulus))
        if transition is None:
            return  # absorbed: the figures draw no arrow for it

        for action in transition.actions:
            self._perform(transaction, action, stimulus, now, message, source)
        if transition.next_state is not transaction.state:
            self._enter(transaction, transition.next_state, stimulus, now)

    def _perform(
        self,
        transaction: _Transaction,
        action: Action,
        stimulus: Stimulus,
        now: float,
        message: Request | Response | None,
        source: Address | None,
    ) -> None:
        key = transaction.key
        source = source or transaction.destination
        match action:
            case Action.RETRANSMIT_REQUEST:
                self._send(transaction, transaction.request_bytes)
            case Action.PASS_RESPONSE if isinstance(message, Response) and isinstance(
                key, ClientTransactionKey
            ):
                self._events.append(ResponseReceived(message, key, source))
            case Action.SEND_ACK if isinstance(message, Response):
                self._send_ack(transaction, message)
            case Action.SEND_DEFERRED_CANCEL if transaction.cancel_deferred:
                transaction.cancel_deferred = False
                self._send_cancel(transaction, now)
            case Action.SEND_RESPONSE if isinstance(message, Response):
                self._send_response(transaction, message)
            case Action.RESEND_RESPONSE if transaction.last_response is not None:
                self._send(transaction, transaction.last_response)
            case Action.PASS_ACK if isinstance(message, Request) and isinstance(
                key, ServerTransactionKey
            ):
                ack = AckReceived(message, source, transaction.transport, key)
                self._events.append(ack)
            case Action.REPORT_TIMEOUT if isinstance(stimulus, Timer):
                self._events.append(TransactionTimedOut(key, stimulus))
            case Action.REPORT_TRANSPORT_ERROR:
                self._events.append(TransportErrorOccurred(key))

    def _enter(
        self, transaction: _Transaction, state: State, cause: Stimulus, now: float
    ) -> None:
        if log.isEnabledFor(logging.DEBUG):
            _log_state_change(transaction, state, cause)
        transaction.state = state
        if state is State.TERMINATED:
            self._terminate(transaction)
            return

        # Timers of the old state that the new one does not list stop here.
        running = STATE_TIMERS.get((transaction.kind, state), ())
        for timer in [t for t in transaction.timers if t not in running]:
            del transaction.timers[timer]
            self._armed -= 1
        self._start_state_timers(transaction, now)

    def _start_state_timers(self, transaction: _Transaction, now: float) -> None:
        expired: list[Timer] = []
        for timer in STATE_TIMERS.get((transaction.kind, transaction.state), ()):
            if timer in transaction.timers:
                continue
            interval = initial_interval(timer, self.timers, transaction.reliable)
            if interval is None:
                continue
            if interval == 0:
                expired.append(timer)  # a zero wait on a reliable transport
            else:
                self._arm(transaction, timer, interval, now)

        state = transaction.state
        for timer in expired:
            if transaction.state is state:
                self._on_timer(transaction, timer, 0.0, now)

    def _on_timer(
        self, transaction: _Transaction, timer: Timer, interval: float, now: float
    ) -> None:
        state = transaction.state
        self._fire(transaction, timer, now)

        # A retransmit timer that leaves the state unchanged restarts backed off.
        if timer.retransmits and transaction.state is state:
            proceeding = state is State.PROCEEDING
            next_interval = retransmit_interval(
                timer, interval, self.timers, proceeding=proceeding
            )
            self._arm(transaction, timer, next_interval, now)

    def _arm(
        self, transaction: _Transaction, timer: Timer, interval: float, now: float
    ) -> None:
        self._sequence += 1
        if timer not in transaction.timers:
            self._armed += 1
        transaction.timers[timer] = _ArmedTimer(self._sequence, interval)
        # On a tie the timer that ends a state fires before one that resends.
        entry = (
            now + interval,
            int(timer.retransmits),
            self._sequence,
            transaction,
            timer,
        )
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * self._armed + 64:
            self._compact_heap()

    def _compact_heap(self) -> None:
        # Stopped timers stay in the heap until popped; drop them in one pass
        # when they outnumber the live ones.
        self._heap = [
            entry
            for entry in self._heap
            if (armed := entry[3].timers.get(entry[4])) is not None
            and armed.sequence == entry[2]
        ]
        heapq.heapify(self._heap)

    def _terminate(self, transaction: _Transaction) -> None:
        self._armed -= len(transaction.timers)
        transaction.timers.clear()
        key = transaction.key
        if isinstance(key, ClientTransactionKey):
            del self._clients[key]
        else:
            del self._servers[key]
            cancellable = _without_method(key)
            if self._cancellable.get(cancellable) == key:
                del self._cancellable[cancellable]
        self._events.append(TransactionTerminated(key))

    # -- Sending -----------------------------------------------------------------

    def _send(self, transaction: _Transaction, data: bytes) -> None:
        self._outbox.append(
            Transmission(data, transaction.destination, transaction.transport)
        )

    def _send_response(self, transaction: _Transaction, response: Response) -> None:
        data = response.to_bytes()
        transaction.last_response = data
        # Only RFC 2543 ACK matching needs the tag; parsing To costs.
        key = transaction.key
        if response.status >= 200 and isinstance(key, ServerTransactionKey):
            if key.rfc2543 is not None:
                transaction.final_to_tag = response.to_tag
        self._send(transaction, data)

    def _send_ack(self, transaction: _Transaction, response: Response) -> None:
        # Retransmitted finals get the same ACK again (§17.1.1.2).
        if transaction.ack_bytes is None:
            ack = build_ack_for_non_2xx(_client_request(transaction), response)
            transaction.ack_bytes = ack.to_bytes()
        self._send(transaction, transaction.ack_bytes)

    def _send_cancel(self, transaction: _Transaction, now: float) -> None:
        # Same destination, port and transport as the INVITE (§9.1).
        cancel = build_cancel(_client_request(transaction))
        transaction.cancel_sent = True
        self.send_request(cancel, transaction.destination, transaction.transport, now)

        # §9.1: with no final response 64*T1 after the CANCEL, the INVITE
        # counts as cancelled and its transaction is destroyed.
        self._arm(transaction, Timer.CANCEL, 64 * self.timers.t1, now)


# -- Keys and destinations from messages ---------------------------------------


def server_key(request: Request) -> ServerTransactionKey:
    """The server transaction a request belongs to (RFC 3261 §17.2.3).

    An ACK belongs to the INVITE transaction; a CANCEL has its own.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    sent_by = _sent_by(via)
    branch = _magic_branch(via)
    if branch is not None:
        return ServerTransactionKey(method, sent_by, branch)

    identity = Rfc2543Match(
        request_uri=request.uri,
        from_tag=request.from_tag,
        to_tag=request.to_tag,
        call_id=request.call_id,
        cseq=request.cseq.number,
        top_via=str(via),
    )
    return ServerTransactionKey(method, sent_by, None, identity)


def server_key_of_response(response: Response) -> ServerTransactionKey:
    """The server transaction a response answers, read from the response."""
    via = response.top_via
    branch = _magic_branch(via)
    if branch is None:
        raise TransactionError("an RFC 2543 request is answered by key only")
    return ServerTransactionKey(response.cseq.method, _sent_by(via), branch)


def client_key(response: Response) -> ClientTransactionKey | None:
    """The client transaction a response matches (RFC 3261 §17.1.3)."""
    branch = response.top_via.branch
    if branch is None:
        return None
    return ClientTransactionKey(branch.lower(), response.cseq.method)


def client_key_of_request(request: Request) -> ClientTransactionKey:
    branch = _magic_branch(request.top_via)
    if branch is None:
        raise TransactionError("a client transaction needs a magic-cookie branch")
    return ClientTransactionKey(branch, request.cseq.method)


def response_destination(
    via: Via, source: Address | None = None, transport: str | None = None
) -> Address:
    """Where a response to a request with this top Via goes.

    RFC 3261 §18.2.2 with RFC 3581 §4: back over the connection on a
    reliable transport, to maddr if present, else to received (or the source
    address, which received records) on the rport or sent-by port.
    """
    if source is not None and transport is not None and is_reliable(transport):
        return source
    sent_by_port = via.sent_by[1]
    maddr = via.params.get("maddr")
    if maddr:
        return (_unbracket(maddr), sent_by_port)

    received = via.received
    if received:
        host = _unbracket(received)
    else:
        host = source[0] if source is not None else via.host
    if via.asks_rport:
        return (host, source[1] if source is not None else sent_by_port)
    rport = via.rport
    return (host, sent_by_port if rport is None else rport)


def _identity(request: Request) -> tuple[str, str | None]:
    return request.call_id, request.top_via.branch


def _client_request(transaction: _Transaction) -> Request:
    request = transaction.request
    if request is None:
        raise TransactionError(f"{transaction.kind.value} transaction has no request")
    return request


def _magic_branch(via: Via) -> str | None:
    branch = via.branch
    if branch is None:
        return None
    branch = branch.lower()
    return branch if branch.startswith(_MAGIC_COOKIE) else None


def _sent_by(via: Via) -> Address:
    host, port = via.sent_by
    return (host.lower(), port)


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _without_method(key: ServerTransactionKey) -> tuple[object, ...]:
    return (key.sent_by, key.branch, key.rfc2543)


def _replace_to_tag(identity: Rfc2543Match, to_tag: str | None) -> Rfc2543Match:
    return replace(identity, to_tag=to_tag)


def _response_trigger(status: int) -> Trigger:
    if status < 200:
        return Trigger.PROVISIONAL
    return Trigger.SUCCESS if status < 300 else Trigger.FAILURE


def _tu_trigger(status: int) -> Trigger:
    if status < 200:
        return Trigger.SEND_PROVISIONAL
    return Trigger.SEND_SUCCESS if status < 300 else Trigger.SEND_FAILURE


def _log_state_change(transaction: _Transaction, state: State, cause: Stimulus) -> None:
    key = transaction.key
    call_id, branch = transaction.identity
    host, port = transaction.destination
    context = with_context(log, call_id=call_id, branch=branch, peer=f"{host}:{port}")
    side = "client" if isinstance(key, ClientTransactionKey) else "server"
    cause_name = f"Timer {cause.value}" if isinstance(cause, Timer) else cause.value
    context.debug(
        "%s %s transaction: %s -> %s (%s)",
        key.method,
        side,
        transaction.state.value,
        state.value,
        cause_name,
    )
