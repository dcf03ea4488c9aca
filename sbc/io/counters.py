"""Counters of what each SIP transport received, sent and dropped.

Input that fails is counted here rather than logged line by line: a peer
(or an attacker) controls it, and a flood of warnings is itself an outage.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum


class DropReason(StrEnum):
    """Why a transport threw input away."""

    UNPARSEABLE_REQUEST = "unparseable_request"
    """Too broken to answer: no Via, From, To, Call-ID or CSeq to echo."""
    ANSWERED_ERROR = "answered_error"
    """A bad request answered statelessly with the parser's status (400,
    505, 513 ...), then dropped."""
    MALFORMED_RESPONSE = "malformed_response"
    """A response that failed to parse or validate (never answered)."""
    FRAMING_ERROR = "framing_error"
    """A stream whose framing could no longer be trusted; closed."""
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    TLS_RECORD_ERROR = "tls_record_error"
    CONNECTION_LIMIT = "connection_limit"
    """An inbound connection refused because too many are open."""
    IDLE_TIMEOUT = "idle_timeout"
    """A connection closed after carrying nothing for too long."""
    MESSAGE_TIMEOUT = "message_timeout"
    """A connection closed because a message it began did not finish in
    time (a slowloris peer trickling bytes to hold the slot)."""
    SEND_FAILED = "send_failed"
    """A message that could not be handed to the socket or connection."""
    ICMP_ERROR = "icmp_error"
    """An ICMP error reported for an earlier UDP send."""


class TransportCounters:
    """Counts for one transport (UDP, TCP or TLS)."""

    __slots__ = ("transport", "received", "sent", "keepalives", "drops")

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.received = 0
        self.sent = 0
        self.keepalives = 0
        self.drops: Counter[DropReason] = Counter()

    def drop(self, reason: DropReason) -> None:
        self.drops[reason] += 1

    def snapshot(self) -> dict[str, int]:
        """Plain numbers, for logs, tests and the admin plane."""
        numbers = {
            "received": self.received,
            "sent": self.sent,
            "keepalives": self.keepalives,
        }
        numbers.update({f"drop.{reason.value}": n for reason, n in self.drops.items()})
        return numbers


class SipCounters:
    """What the SIP layers above the sockets did with received messages."""

    __slots__ = (
        "requests",
        "responses",
        "retransmissions_absorbed",
        "acks_absorbed",
        "transport_errors",
        "internal_errors",
    )

    def __init__(self) -> None:
        self.requests = 0
        """Requests that passed validation and went to the transaction layer."""
        self.responses = 0
        """Responses that passed validation and went to the transaction layer."""
        self.retransmissions_absorbed = 0
        """Requests that matched a live server transaction: no new work."""
        self.acks_absorbed = 0
        """ACKs for non-2xx responses, consumed by their INVITE transaction."""
        self.transport_errors = 0
        """Sends the transport could not complete, reported to transactions."""
        self.internal_errors = 0
        """Messages or timers that hit a bug; logged with a traceback."""

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
