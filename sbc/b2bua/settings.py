"""What the call engine is given: settings, randomness and the two hooks.

The engine draws every random value from a `RandomSource`, writes each
finished call to a `CallRecordWriter` and passes every body that crosses
from one leg to the other through a `BodyHook` (where the SDP rewriter
plugs in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sbc.b2bua.call import Side
from sbc.b2bua.session_timer import SessionTimerPolicy
from sbc.cdr import CallRecord
from sbc.config.model import Config


class RandomSource(Protocol):
    """``random.Random`` or a seeded stand-in."""

    def random(self) -> float: ...

    def randbytes(self, n: int) -> bytes: ...


class CallRecordWriter(Protocol):
    """Where finished calls go: `sbc.cdr.CdrWriter` or a list in tests."""

    def write(self, record: CallRecord) -> None: ...


class BodyHook(Protocol):
    """Where the SDP rewriter plugs in: every body crossing legs passes here.

    `rewrite` gets the body as received on the `source` leg and returns the
    body to send on the other leg. For a request it may raise a SipError
    (488 for an unusable offer, say): the request is then refused with that
    status. For the callee's first 2xx it may raise too: that dialog is then
    ended with ACK and BYE and the caller gets the status. For other
    responses and ACKs it must not raise.
    """

    def rewrite(
        self, call_id: str, source: Side, body: bytes, content_type: str
    ) -> bytes: ...

    def release(self, call_id: str) -> None: ...


class PassThroughBodies:
    """The body hook that changes nothing (until the SDP rewriter exists)."""

    def rewrite(
        self, call_id: str, source: Side, body: bytes, content_type: str
    ) -> bytes:
        return body

    def release(self, call_id: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """The SBC's own address on one transport, for Via and Contact."""

    listener: str
    host: str
    port: int
    transport: str

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class B2buaSettings:
    endpoints: tuple[LocalEndpoint, ...]
    """One per transport; the first listener of a transport serves it."""
    session_timer: SessionTimerPolicy = field(default_factory=SessionTimerPolicy)
    no_answer_timeout: float = 180.0
    """Seconds a B-leg INVITE may go without a provisional or final response
    before it is cancelled (Timer C, RFC 3261 §16.6: more than 3 minutes
    is asked of proxies; 180 s is this SBC's default)."""
    listener_endpoints: tuple[LocalEndpoint, ...] = ()
    """Every listener's; a trunk's legs use its own listener's (the first of
    the leg's transport), so a protected trunk's Via and Contact name the
    address inside its SAs. Empty: ``endpoints`` serve every trunk."""

    @classmethod
    def from_config(cls, config: Config) -> B2buaSettings:
        every = tuple(
            LocalEndpoint(
                listener.name,
                str(listener.address),
                listener.port,
                listener.transport.upper(),
            )
            for listener in config.listeners
        )
        endpoints: dict[str, LocalEndpoint] = {}
        for endpoint in every:
            endpoints.setdefault(endpoint.transport, endpoint)
        return cls(tuple(endpoints.values()), listener_endpoints=every)
