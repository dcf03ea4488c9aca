"""Shared pieces for the transaction-layer tests: SIP text, a fake clock loop.

Messages are written as literal SIP text and parsed with the real parser, so
the transaction layer sees exactly what the transport layer would give it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sbc.sip.events import TransactionEvent
from sbc.sip.message import Request, Response
from sbc.sip.parser import parse_message, validate_request, validate_response
from sbc.sip.transaction import TransactionLayer, Transmission

UAC = ("192.0.2.10", 5060)
UAS = ("192.0.2.20", 5060)


def request_text(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKtx1",
    cseq: int = 1,
    cseq_method: str | None = None,
    via_host: str = "192.0.2.10",
    via_params: str = "",
    to_tag: str | None = None,
    from_tag: str = "f1",
    call_id: str = "tx-call-1@192.0.2.10",
    uri: str = "sip:+15550100@192.0.2.20",
    routes: tuple[str, ...] = (),
    transport: str = "UDP",
    one_via_line: bool = False,
) -> bytes:
    branch_param = f";branch={branch}" if branch is not None else ""
    to = "<sip:+15550100@192.0.2.20>" + (f";tag={to_tag}" if to_tag else "")
    top_via = f"SIP/2.0/{transport} {via_host}:5060{via_params}{branch_param}"
    next_via = "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKdownstream"
    vias = [f"{top_via}, {next_via}"] if one_via_line else [top_via, next_via]
    lines = [
        f"{method} {uri} SIP/2.0",
        *(f"Via: {via}" for via in vias),
        "Max-Forwards: 70",
        *(f"Route: {route}" for route in routes),
        f"From: <sip:+15550101@192.0.2.10>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:+15550101@192.0.2.10:5060>",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def request(method: str = "INVITE", **fields: object) -> Request:
    message = parse_message(request_text(method, **fields))
    assert isinstance(message, Request)
    validate_request(message)
    return message


def response_to(
    data: bytes | Request,
    status: int,
    *,
    to_tag: str | None = "uas1",
    reason: str = "Whatever",
) -> Response:
    """A response as the peer would write it, copying the request's fields."""
    req = data if isinstance(data, Request) else parse_message(data)
    assert isinstance(req, Request)
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {value}" for value in req.headers.get_all("Via")]
    to = req.headers.get("To") or ""
    if to_tag is not None and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines += [
        f"From: {req.headers.get('From')}",
        f"To: {to}",
        f"Call-ID: {req.call_id}",
        f"CSeq: {req.headers.get('CSeq')}",
        "Content-Length: 0",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Response)
    validate_response(message)
    return message


@dataclass
class Sent:
    """A transmission stamped with the fake-clock time it left the layer."""

    time: float
    transmission: Transmission

    @property
    def message(self) -> Request | Response:
        return parse_message(self.transmission.data)


@dataclass
class Driver:
    """Runs a TransactionLayer against a fake clock, recording all it does."""

    layer: TransactionLayer = field(default_factory=TransactionLayer)
    now: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    events: list[tuple[float, TransactionEvent]] = field(default_factory=list)

    def collect(self) -> None:
        for transmission in self.layer.datagrams_to_send():
            self.sent.append(Sent(self.now, transmission))
        while (event := self.layer.next_event()) is not None:
            self.events.append((self.now, event))

    def advance(self, until: float, *, max_firings: int = 10_000) -> None:
        """Fire every timer due up to `until`, each at its own deadline."""
        for _ in range(max_firings):
            deadline = self.layer.next_timer()
            if deadline is None or deadline > until:
                break
            self.now = max(self.now, deadline)
            self.layer.handle_timer(self.now)
            self.collect()
        else:
            raise AssertionError("timers kept firing: a loop that never ends")
        self.now = max(self.now, until)

    def receive(
        self,
        message: Request | Response,
        source: tuple[str, int],
        transport: str | None = None,
    ) -> None:
        transport = transport or message.top_via.transport
        if isinstance(message, Request):
            self.layer.receive_request(message, source, transport, self.now)
        else:
            self.layer.receive_response(message, source, transport, self.now)
        self.collect()

    def take_sent(self) -> list[Sent]:
        sent, self.sent = self.sent, []
        return sent

    def take_events(self) -> list[TransactionEvent]:
        events = [event for _, event in self.events]
        self.events = []
        return events
