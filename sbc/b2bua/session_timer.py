"""Session timers (RFC 4028), negotiated on each leg on its own.

Pure functions over requests and responses; the engine arms the timers.
The refresher refreshes at half the interval (§10); the other side gives up
when no refresh came by the interval minus min(32, interval/3) seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbc.b2bua.errors import SessionIntervalTooSmall
from sbc.sip.message import Request, Response

# RFC 4028 §4: Min-SE may never be below 90 seconds.
ABSOLUTE_MIN_SE = 90


@dataclass(frozen=True, slots=True)
class SessionTimerPolicy:
    """What the SBC asks for and accepts on every leg."""

    session_expires: int = 1800
    """Interval asked for (and the cap on a longer one offered), seconds."""
    min_se: int = ABSOLUTE_MIN_SE
    """Shortest interval accepted; shorter requests get 422 (§6)."""

    def __post_init__(self) -> None:
        if self.min_se < ABSOLUTE_MIN_SE or self.session_expires < self.min_se:
            raise ValueError("need 90 <= min_se <= session_expires (RFC 4028 §4)")


@dataclass(frozen=True, slots=True)
class SessionTimer:
    """The negotiated timer of one leg."""

    interval: int
    we_refresh: bool
    refresher: str
    """``uac`` or ``uas`` as the Session-Expires parameter names it."""

    def refresh_delay(self) -> float:
        return self.interval / 2

    def expiry_delay(self) -> float:
        # §10: the side that does not refresh allows some slack before BYE.
        if self.we_refresh:
            return float(self.interval)
        return self.interval - min(32.0, self.interval / 3)

    def header(self) -> str:
        return f"{self.interval};refresher={self.refresher}"


def negotiate_as_uas(request: Request, policy: SessionTimerPolicy) -> SessionTimer:
    """The timer our 2xx to `request` sets (RFC 4028 §9).

    Raises SessionIntervalTooSmall (422) when the request's Session-Expires
    is below our Min-SE.
    """
    offered = request.session_expires
    peer_supports = "timer" in request.supported or "timer" in request.require
    floor = max(policy.min_se, request.min_se or 0)
    if offered is not None and offered.delta < policy.min_se:
        raise SessionIntervalTooSmall(
            "Session Interval Too Small", min_se=policy.min_se
        )
    interval = policy.session_expires if offered is None else offered.delta
    interval = max(min(interval, policy.session_expires), floor)

    # §9: keep the refresher the UAC chose; else let a capable UAC refresh.
    refresher = offered.refresher if offered is not None else None
    if refresher not in ("uac", "uas"):
        refresher = "uac" if peer_supports else "uas"
    if not peer_supports:
        refresher = "uas"
    return SessionTimer(interval, refresher == "uas", refresher)


def negotiate_as_uac(response: Response, asked: int) -> SessionTimer:
    """The timer a 2xx to our request sets (RFC 4028 §7.2).

    Without Session-Expires in the 2xx the peer runs no timer; the SBC
    refreshes anyway, at the interval it asked for, to find dead sessions.
    """
    granted = response.session_expires
    if granted is None:
        return SessionTimer(asked, True, "uac")
    refresher = granted.refresher or "uac"
    return SessionTimer(granted.delta, refresher == "uac", refresher)


def interval_after_422(response: Response, asked: int) -> int | None:
    """The interval to retry with after a 422, or None if it is no help (§7.1)."""
    min_se = response.min_se
    if min_se is None or min_se <= asked:
        return None
    return min_se
