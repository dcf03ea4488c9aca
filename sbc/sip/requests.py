"""Requests the transaction layer builds itself: ACK for a non-2xx and CANCEL.

Both copy their identity from the INVITE they belong to, so they reach the
same server transaction (RFC 3261 §17.1.1.3, §9.1).
"""

from __future__ import annotations

from sbc.sip.message import Headers, Request, Response

# RFC 3261 §8.1.1.7: a branch starting with this cookie is unique in space
# and time, which is what lets §17.2.3 match transactions by branch.
MAGIC_COOKIE = "z9hG4bK"

# RFC 3261 §8.1.1.6: the recommended initial Max-Forwards.
DEFAULT_MAX_FORWARDS = "70"


def new_branch(entropy: bytes) -> str:
    """A Via branch for a new client transaction, from caller-supplied randomness."""
    if len(entropy) < 8:
        raise ValueError("a branch needs at least 64 bits of entropy")
    return MAGIC_COOKIE + entropy.hex()


def build_ack_for_non_2xx(invite: Request, response: Response) -> Request:
    """The ACK an INVITE client transaction sends for a 300-699 (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From and the CSeq number come from the INVITE, To
    (with its tag) from the response; the only Via is the INVITE's top Via, so
    the ACK carries the INVITE's branch; the INVITE's Route set is kept.
    """
    return _build_in_transaction(invite, "ACK", to=_required(response, "To"))


def build_cancel(invite: Request) -> Request:
    """The CANCEL for a pending INVITE client transaction (RFC 3261 §9.1).

    Request-URI, Call-ID, From, To and the CSeq number are those of the
    INVITE, tags included; the only Via is the INVITE's top Via; the INVITE's
    Route set is kept.
    """
    return _build_in_transaction(invite, "CANCEL", to=_required(invite, "To"))


def _build_in_transaction(invite: Request, method: str, *, to: str) -> Request:
    headers = Headers()
    headers.add("Via", invite.headers.values("Via")[0])
    headers.add("Max-Forwards", DEFAULT_MAX_FORWARDS)
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("From", _required(invite, "From"))
    headers.add("To", to)
    headers.add("Call-ID", _required(invite, "Call-ID"))
    headers.add("CSeq", f"{invite.cseq.number} {method}")
    return Request(method=method, uri=invite.uri, headers=headers)


def _required(message: Request | Response, name: str) -> str:
    # validate_request/validate_response ran before a transaction existed, so
    # a missing header here means the caller built the message by hand.
    value = message.headers.get(name)
    if value is None:
        raise ValueError(f"cannot build an in-transaction request without {name}")
    return value
