"""The state of one call: an A-leg, a B-leg and what links them.

Each leg is an independent SIP user agent: its own Call-ID, tags, CSeq,
branches and route set. Nothing of one leg's identity is ever copied to
the other; the engine (`sbc.b2bua.engine`) moves only bodies and the
headers a trunk's allow-list names between them.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from sbc.admission import CallTicket
from sbc.b2bua.session_timer import SessionTimer
from sbc.b2bua.timers import EngineTimer
from sbc.cdr import HangupSide
from sbc.routing import FailoverPlan
from sbc.sip.dialog import Dialog
from sbc.sip.message import Request, Response
from sbc.sip.transaction import (
    Address,
    ClientTransactionKey,
    ServerTransactionKey,
)


class Side(enum.Enum):
    A = "a"
    """The leg the call came in on; the SBC is its UAS."""
    B = "b"
    """The leg the SBC placed; the SBC is its UAC."""


class CallPhase(enum.Enum):
    """Where the call is, as the A-leg sees it."""

    PROCEEDING = "Proceeding"
    """The A-leg INVITE is unanswered; B-leg attempts are under way."""
    ANSWERED = "Answered"
    """A 2xx went to the A-leg; its ACK may still be due."""
    ENDING = "Ending"
    """The call is over for the caller; a leg still has work to finish."""


@dataclass(slots=True, eq=False)
class Leg:
    """One side of a call, one SIP dialog with one peer."""

    side: Side
    call: Call
    call_id: str
    local_tag: str
    peer: Address
    """Where every request of this leg goes (the trunk target or the source)."""
    transport: str
    trunk: str
    invite: Request
    """The initial INVITE: received (A) or sent (B)."""
    dialog: Dialog | None = None
    """The confirmed dialog (A: also the early one we answer in)."""
    early: dict[str, Dialog] = field(default_factory=dict)
    """B-leg early dialogs, by the To tag of the 1xx that made each (§12.1)."""
    closed: bool = False
    """BYE sent or received, or the INVITE failed: nothing more to do."""
    offer_answer_busy: int = 0
    """INVITE/UPDATE exchanges in progress on this leg, either direction."""
    invite_in_progress: bool = False
    """An INVITE from the peer is unanswered (a second one gets 500, §14.2)."""
    answer_due_in_ack: bool = False
    """Our 2xx carried an offer: the peer's answer comes in its ACK."""
    session: SessionTimer | None = None
    progress_timer: EngineTimer | None = None
    """B-leg: Timer C of RFC 3261 §16.6, reset by each provisional."""
    no_answer: bool = False
    """B-leg: Timer C fired, so the attempt failed by timing out (§16.8)."""
    refresh_timer: EngineTimer | None = None
    expiry_timer: EngineTimer | None = None
    last_body_sent: bytes = b""
    last_body_received: bytes = b""
    last_content_type: str = "application/sdp"
    peer_allows_update: bool = False
    # B-leg: the ACK of the kept 2xx, resent when the 2xx is retransmitted.
    ack: Request | None = None
    ack_cseq: int = 0
    """CSeq of the INVITE whose ACK waits (0: the initial INVITE)."""
    forward_ack_to: Leg | None = None
    """The leg whose deferred ACK this leg's next ACK completes."""
    # A-leg: the 2xx we retransmit until the ACK (§13.3.1.4).
    final_2xx: Response | None = None
    final_2xx_key: ServerTransactionKey | None = None
    retransmit_timer: EngineTimer | None = None
    bye_after_ack: bool = False
    # RFC 3262 as UAS (A-leg): the reliable 1xx awaiting PRACK, and the queue.
    rseq: int = 0
    unacked_1xx: Response | None = None
    queued_1xx: deque[tuple[Response, bool]] = field(default_factory=deque)
    reliable_timer: EngineTimer | None = None
    # RFC 3262 as UAC (B-leg): the last RSeq seen per early dialog (To tag).
    last_rseq: dict[str, int] = field(default_factory=dict)
    session_asked: int = 0
    """B-leg: the Session-Expires our INVITE asked for."""
    invite_key: ClientTransactionKey | ServerTransactionKey | None = None

    @property
    def other(self) -> Leg | None:
        return self.call.b if self.side is Side.A else self.call.a

    def dialog_for(self, remote_tag: str | None) -> Dialog | None:
        """The dialog a request from the peer with this From tag belongs to."""
        if self.dialog is not None and self.dialog.remote_tag == remote_tag:
            return self.dialog
        if remote_tag is None:
            return None
        return self.early.get(remote_tag)

    def cancel_timers(self) -> None:
        for timer in (
            self.progress_timer,
            self.refresh_timer,
            self.expiry_timer,
            self.retransmit_timer,
            self.reliable_timer,
        ):
            if timer is not None:
                timer.cancel()
        self.progress_timer = self.refresh_timer = self.expiry_timer = None
        self.retransmit_timer = self.reliable_timer = None


@dataclass(slots=True, eq=False)
class Call:
    """One call through the SBC, from the A-leg INVITE to its last message."""

    a: Leg = field(init=False)
    b: Leg | None = None
    plan: FailoverPlan | None = None
    a_ticket: CallTicket | None = None
    b_ticket: CallTicket | None = None
    phase: CallPhase = CallPhase.PROCEEDING
    cancelled: bool = False
    start_time: float = 0.0
    answer_time: float | None = None
    final_status: int | None = None
    hangup_side: HangupSide | None = None
    end_reason: str | None = None
    """Why the SBC ended the call itself ("media_timeout"), for the CDR."""
    calling_received: str | None = None
    calling_e164: str | None = None
    calling_sent: str | None = None
    called_received: str | None = None
    called_e164: str | None = None
    called_sent: str | None = None
    session_refreshes: int = 0
    session_retries: int = 0
    attempts: list[Leg] = field(default_factory=list)
    """Every B-leg tried, the current one last."""
    finished: bool = False
    merge_key: tuple[str, str | None, int] | None = None
    """Call-ID, From tag and CSeq of the A-leg INVITE (RFC 3261 §8.2.2.2)."""

    @property
    def legs(self) -> tuple[Leg, ...]:
        return (self.a, *self.attempts)
