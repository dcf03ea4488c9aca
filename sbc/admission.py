"""Call admission control: per-trunk concurrent calls and calls per second.

Sans-IO: the caller passes ``now`` (seconds, any monotonic origin). A call
over a limit is refused with :class:`CallRejected`, which carries 503 and a
Retry-After value (RFC 3261 §21.5.4, §20.33):

- over ``max_calls``: the trunk's configured ``retry_after``, since nobody
  can know when a call will end;
- over ``max_cps``: the seconds until the token bucket holds a whole token
  again, rounded up, at least 1.

The concurrency limit is checked first, and a refused call takes no token,
so rejected attempts never eat into the rate of admitted ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from sbc.config.model import Config, Limits
from sbc.sip.errors import SipError

# Token counts are floats refilled by rate * elapsed; a refill that should
# land exactly on a whole token may land a hair below it.
_EPSILON = 1e-9


class CallRejected(SipError):
    """503 Service Unavailable with ``retry_after`` seconds."""

    status_code = 503

    def __init__(self, reason: str, *, retry_after: int, cause: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        # "max_calls" or "max_cps": which limit refused the call.
        self.cause = cause


class TokenBucket:
    """``rate`` tokens per second, holding at most ``capacity``; starts full."""

    __slots__ = ("_tokens", "_updated", "capacity", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        if not rate > 0 or not capacity >= 1:
            raise ValueError("a token bucket needs rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._updated: float | None = None

    def take(self, now: float) -> float:
        """Take one token: 0.0 when taken, else the seconds until one is due."""
        self._refill(now)
        if self._tokens >= 1 - _EPSILON:
            self._tokens = max(self._tokens - 1, 0.0)
            return 0.0
        return (1 - self._tokens) / self.rate

    def _refill(self, now: float) -> None:
        # A clock that steps back refills nothing rather than draining.
        if self._updated is not None and now > self._updated:
            elapsed = now - self._updated
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        if self._updated is None or now > self._updated:
            self._updated = now


@dataclass(slots=True, eq=False)
class CallTicket:
    """An admitted call; hand it back to :meth:`AdmissionControl.release`."""

    trunk: str
    released: bool = False


@dataclass(frozen=True, slots=True)
class AdmissionStats:
    active_calls: int
    admitted: int
    rejected_max_calls: int
    rejected_max_cps: int


@dataclass(slots=True)
class _TrunkState:
    limits: Limits
    bucket: TokenBucket | None
    active: int = 0
    admitted: int = 0
    rejected_max_calls: int = 0
    rejected_max_cps: int = 0


class AdmissionControl:
    """Admits or refuses new calls per trunk; counts the calls in progress."""

    def __init__(self, limits: Mapping[str, Limits]) -> None:
        self._trunks = {name: _new_state(value) for name, value in limits.items()}

    @classmethod
    def from_config(cls, config: Config) -> AdmissionControl:
        return cls({trunk.name: trunk.limits for trunk in config.trunks})

    def admit(self, trunk: str, now: float) -> CallTicket:
        """Count a new call on ``trunk`` or raise :class:`CallRejected`."""
        state = self._state(trunk)
        limits = state.limits
        if limits.max_calls is not None and state.active >= limits.max_calls:
            state.rejected_max_calls += 1
            raise CallRejected(
                "Service Unavailable",
                retry_after=limits.retry_after,
                cause="max_calls",
            )
        if state.bucket is not None:
            wait = state.bucket.take(now)
            if wait > 0:
                state.rejected_max_cps += 1
                retry_after = max(1, math.ceil(wait - _EPSILON))
                raise CallRejected(
                    "Service Unavailable", retry_after=retry_after, cause="max_cps"
                )
        state.active += 1
        state.admitted += 1
        return CallTicket(trunk)

    def release(self, ticket: CallTicket) -> None:
        """The call of ``ticket`` has ended; releasing twice is harmless."""
        if ticket.released:
            return
        ticket.released = True
        state = self._trunks.get(ticket.trunk)
        if state is not None and state.active > 0:
            state.active -= 1

    def reconfigure(self, limits: Mapping[str, Limits]) -> None:
        """Apply new limits; calls in progress stay counted.

        A trunk whose limits did not change keeps its token bucket.
        """
        updated: dict[str, _TrunkState] = {}
        for name, value in limits.items():
            state = self._trunks.get(name)
            if state is None or state.limits != value:
                fresh = _new_state(value)
                fresh.active = 0 if state is None else state.active
                state = fresh
            updated[name] = state
        self._trunks = updated

    def stats(self, trunk: str) -> AdmissionStats:
        state = self._state(trunk)
        return AdmissionStats(
            state.active,
            state.admitted,
            state.rejected_max_calls,
            state.rejected_max_cps,
        )

    def _state(self, trunk: str) -> _TrunkState:
        # A trunk without configured limits is still counted.
        state = self._trunks.get(trunk)
        if state is None:
            state = self._trunks[trunk] = _new_state(Limits())
        return state


def _new_state(limits: Limits) -> _TrunkState:
    bucket = None
    if limits.max_cps is not None:
        capacity = limits.burst or max(1, math.ceil(limits.max_cps))
        bucket = TokenBucket(limits.max_cps, capacity)
    return _TrunkState(limits, bucket)
