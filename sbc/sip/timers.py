"""SIP transaction timers A to M (RFC 3261 §17 and Table 4, L and M from RFC 6026).

Durations only: the transaction layer arms them against the `now` its caller
passes in, so nothing here reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Transports on which a message is either delivered or reported lost, so the
# transaction layer does not retransmit (RFC 3261 §17.1.1.2, §18).
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


def is_reliable(transport: str) -> bool:
    return transport.upper() in RELIABLE_TRANSPORTS


@dataclass(frozen=True, slots=True)
class TimerValues:
    """The base intervals every transaction timer is derived from."""

    t1: float = 0.5
    """Round-trip time estimate; retransmission starts here (RFC 3261 §17.1.1.1)."""
    t2: float = 4.0
    """Cap on the non-INVITE request and INVITE final response retransmit interval."""
    t4: float = 5.0
    """Longest time a message stays in the network (Timers I and K)."""
    timer_d: float = 32.0
    """Timer D on unreliable transports: RFC 3261 asks for at least 32 s."""

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("SIP timers need 0 < T1 <= T2")
        if self.t4 <= 0 or self.timer_d <= 0:
            raise ValueError("SIP timers T4 and D must be positive")


DEFAULT_TIMERS = TimerValues()


class Timer(enum.Enum):
    """The transaction timers, named as in RFC 3261 Table 4 and RFC 6026."""

    # Enum hashes by name in Python code; members are singletons, so hashing
    # by identity is equivalent and cheaper on the per-message path.
    __hash__ = object.__hash__

    A = "A"  # INVITE request retransmit (client, Calling)
    B = "B"  # INVITE transaction timeout (client, Calling)
    D = "D"  # wait for response retransmits (INVITE client, Completed)
    E = "E"  # non-INVITE request retransmit (client, Trying/Proceeding)
    F = "F"  # non-INVITE transaction timeout (client)
    G = "G"  # INVITE final response retransmit (server, Completed)
    H = "H"  # wait for ACK (INVITE server, Completed)
    # Timer I is the RFC's name, ambiguous-looking or not.
    I = "I"  # noqa: E741 - wait for ACK retransmits (INVITE server, Confirmed)
    J = "J"  # wait for request retransmits (non-INVITE server, Completed)
    K = "K"  # wait for response retransmits (non-INVITE client, Completed)
    L = "L"  # wait for INVITE retransmits after a 2xx (server, Accepted)
    M = "M"  # wait for 2xx retransmits and forks (client, Accepted)
    # Not lettered in the RFC: 64*T1 after sending a CANCEL with no final
    # response, the INVITE client transaction counts as cancelled (§9.1).
    CANCEL = "CANCEL"

    @property
    def retransmits(self) -> bool:
        """True for the timers that resend a message instead of ending a state."""
        return self in _RETRANSMIT_TIMERS


_RETRANSMIT_TIMERS = frozenset({Timer.A, Timer.E, Timer.G})


def initial_interval(timer: Timer, values: TimerValues, reliable: bool) -> float | None:
    """How long `timer` runs when its state is entered; None if it is not started.

    On reliable transports the retransmit timers are not started and the
    timers that wait out retransmissions are zero (RFC 3261 §17.1.1.2,
    §17.1.2.2, §17.2.1, §17.2.2).
    """
    if timer is Timer.CANCEL:
        return None  # started by sending the CANCEL, not by a state
    if timer.retransmits:
        return None if reliable else values.t1
    if timer in (Timer.B, Timer.F, Timer.H, Timer.L, Timer.M):
        return 64 * values.t1
    if reliable:
        return 0.0
    if timer is Timer.D:
        return values.timer_d
    if timer is Timer.J:
        return 64 * values.t1
    return values.t4  # I and K


def retransmit_interval(
    timer: Timer, previous: float, values: TimerValues, *, proceeding: bool
) -> float:
    """The interval a retransmit timer is reset to after it fires.

    Timer A doubles without a cap (RFC 3261 §17.1.1.2); Timer E doubles up to
    T2, and is T2 once a provisional response has arrived (§17.1.2.2); Timer G
    doubles up to T2 (§17.2.1).
    """
    if timer is Timer.A:
        return 2 * previous
    if timer is Timer.E and proceeding:
        return values.t2
    return min(2 * previous, values.t2)
