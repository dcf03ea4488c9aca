"""Errors the call engine answers with, each carrying its SIP status."""

from __future__ import annotations

from sbc.sip.errors import SipError


class LoopDetected(SipError):
    """482: a merged request, the same request again by another path (§8.2.2.2)."""

    status_code = 482


class DialogNotFound(SipError):
    """481: an in-dialog request for no dialog of ours (§12.2.2)."""

    status_code = 481


class RequestPending(SipError):
    """491: an offer/answer exchange is already in progress (§14.1, RFC 3311 §5.2)."""

    status_code = 491


class OverlappingInvite(SipError):
    """500 with Retry-After: an INVITE while the previous one is unanswered (§14.2)."""

    status_code = 500

    def __init__(self, reason: str, *, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class SessionIntervalTooSmall(SipError):
    """422 with Min-SE: Session-Expires below our minimum (RFC 4028 §6)."""

    status_code = 422

    def __init__(self, reason: str, *, min_se: int) -> None:
        super().__init__(reason)
        self.min_se = min_se


class MethodNotAllowed(SipError):
    """405 with Allow: a method we know but do not serve for peers (§21.4.6)."""

    status_code = 405

    def __init__(self, reason: str, *, allow: tuple[str, ...]) -> None:
        super().__init__(reason)
        self.allow = allow


class TransferRefused(SipError):
    """403: the SBC does not let a peer transfer a call with REFER (RFC 3515 §2.4.2)."""

    status_code = 403


class TrunkUnavailable(SipError):
    """503: the trunk a new call came from is disabled or draining (policy)."""

    status_code = 503
