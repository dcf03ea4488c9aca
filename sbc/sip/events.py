"""What the SIP transaction layer reports to its transaction user (TU).

Each event is a frozen record named for something that has happened; the TU
drains them with `TransactionLayer.next_event()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sbc.sip.message import Request, Response
    from sbc.sip.timers import Timer
    from sbc.sip.transaction import (
        Address,
        ClientTransactionKey,
        ServerTransactionKey,
        TransactionKey,
    )


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request that is not a retransmission opened a server transaction."""

    request: Request
    key: ServerTransactionKey
    """The server transaction to answer on with `send_response`."""
    source: Address
    transport: str


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx, which is the TU's own business (RFC 3261 §17.2.3)."""

    request: Request
    source: Address
    transport: str
    key: ServerTransactionKey | None
    """The INVITE server transaction in Accepted it matched, if any (RFC 6026)."""


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL opened its own server transaction (RFC 3261 §9.2).

    The TU answers the CANCEL on `key`: 481 when `cancelled_key` is None,
    otherwise 200; and when `pending` it also answers the cancelled INVITE
    with 487.
    """

    request: Request
    key: ServerTransactionKey
    source: Address
    transport: str
    cancelled_key: ServerTransactionKey | None
    """The server transaction the CANCEL matches, or None (answer 481)."""
    pending: bool
    """True while the matched transaction has sent no final response."""


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response that its client transaction passes up to the TU."""

    response: Response
    key: ClientTransactionKey
    source: Address


@dataclass(frozen=True, slots=True)
class StrayResponseReceived:
    """A response that matched no client transaction (RFC 3261 §18.1.2).

    Typically a 2xx retransmission after Timer M, which the UAC core ACKs
    again (§13.2.2.4); a stateful proxy drops it (RFC 6026).
    """

    response: Response
    source: Address
    transport: str


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B, F, H or CANCEL fired: the peer never completed the transaction."""

    key: TransactionKey
    timer: Timer


@dataclass(frozen=True, slots=True)
class TransportErrorOccurred:
    """The transport reported that a message of this transaction was not sent."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached Terminated and left the table."""

    key: TransactionKey


TransactionEvent = (
    RequestReceived
    | AckReceived
    | CancelReceived
    | ResponseReceived
    | StrayResponseReceived
    | TransactionTimedOut
    | TransportErrorOccurred
    | TransactionTerminated
)
