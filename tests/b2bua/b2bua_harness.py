"""An in-memory lab: caller UA, SBC and callee UAs on one fake clock.

Every node is a real `TransactionLayer`; what moves between them is the
serialized bytes of each message, parsed again on arrival, exactly as the
UDP transport would. The SBC node runs the `B2bua` engine; the phones are
small scripted user agents built on `sbc.sip.dialog`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sbc.b2bua import B2bua, B2buaSettings
from sbc.b2bua.session_timer import SessionTimerPolicy
from sbc.cdr import CallRecord
from sbc.config.model import Config
from sbc.sip.dialog import Dialog
from sbc.sip.events import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponseReceived,
)
from sbc.sip.message import Headers, Request, Response, make_response
from sbc.sip.parser import parse_message, validate_request, validate_response
from sbc.sip.requests import new_branch
from sbc.sip.transaction import ClientTransactionKey, TransactionLayer

Address = tuple[str, int]
CALLER = ("192.0.2.10", 5060)
SBC = ("192.0.2.1", 5060)
CALLEE = ("192.0.2.20", 5060)
BACKUP = ("192.0.2.21", 5060)

OFFER = b"v=0\r\no=caller 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=callee 7 7 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n"


def lab_config(overrides: dict[str, dict[str, object]] | None = None) -> Config:
    carrier = {
        "name": "carrier",
        "kind": "carrier",
        "listeners": ["udp"],
        "targets": [{"host": "192.0.2.10"}],
        "inbound": {"allow": ["192.0.2.10"]},
        "dial_plan": "out",
        "numbers": {"inbound": [{"match": r"00(\d+)", "replace": r"+\1"}]},
    }
    pbx = {
        "name": "pbx",
        "kind": "pbx",
        "listeners": ["udp"],
        "targets": [{"host": "192.0.2.20"}],
        "numbers": {"outbound": [{"match": r"\+1555(\d+)", "replace": r"\1"}]},
    }
    backup = {
        "name": "backup",
        "kind": "pbx",
        "listeners": ["udp"],
        "targets": [{"host": "192.0.2.21"}],
    }
    for trunk in (carrier, pbx, backup):
        trunk.update((overrides or {}).get(str(trunk["name"]), {}))
    return Config.model_validate(
        {
            "listeners": [{"name": "udp", "transport": "udp", "address": "192.0.2.1"}],
            "trunks": [carrier, pbx, backup],
            "dial_plans": [
                {
                    "name": "out",
                    "routes": [
                        {
                            "prefix": "+1555",
                            "candidates": [
                                {"trunk": "pbx", "priority": 1},
                                {"trunk": "backup", "priority": 2},
                            ],
                        }
                    ],
                }
            ],
        }
    )


def parse(data: bytes) -> Request | Response:
    message = parse_message(data)
    if isinstance(message, Request):
        validate_request(message)
    else:
        validate_response(message)
    return message


@dataclass
class Wire:
    source: Address
    destination: Address
    data: bytes
    at: float = 0.0

    @property
    def message(self) -> Request | Response:
        return parse(self.data)


class Node:
    def __init__(self, lab: Lab, address: Address) -> None:
        self.lab = lab
        self.address = address
        self.layer = TransactionLayer()

    def after_input(self, now: float) -> None:
        while self.layer.next_event() is not None:
            pass

    def timer(self) -> float | None:
        return self.layer.next_timer()

    def fire(self, now: float) -> None:
        self.layer.handle_timer(now)
        self.after_input(now)


class SbcNode(Node):
    def __init__(self, lab: Lab, config: Config, policy: SessionTimerPolicy) -> None:
        super().__init__(lab, SBC)
        settings = B2buaSettings.from_config(config)
        settings = B2buaSettings(settings.endpoints, policy)
        self.records: list[CallRecord] = []
        self.engine = B2bua(
            self.layer, config, settings, lab.rng, self, bodies=lab.bodies
        )

    def write(self, record: CallRecord) -> None:
        self.records.append(record)

    def after_input(self, now: float) -> None:
        self.engine.pump(now)

    def timer(self) -> float | None:
        deadlines = [
            t
            for t in (self.layer.next_timer(), self.engine.next_timer())
            if t is not None
        ]
        return min(deadlines, default=None)

    def fire(self, now: float) -> None:
        self.layer.handle_timer(now)
        self.engine.handle_timer(now)


@dataclass
class UacCall:
    """An INVITE this phone sent and what came back."""

    invite: Request
    key: ClientTransactionKey
    responses: list[Response] = field(default_factory=list)
    dialogs: dict[str, Dialog] = field(default_factory=dict)
    acks: int = 0

    @property
    def final(self) -> Response | None:
        return next((r for r in self.responses if r.status >= 200), None)

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


class Phone(Node):
    """A scripted user agent: records what it gets, answers what tests say."""

    def __init__(self, lab: Lab, address: Address, name: str) -> None:
        super().__init__(lab, address)
        self.name = name
        self.requests: list[RequestReceived] = []
        self.acks: list[Request] = []
        self.cancels: list[CancelReceived] = []
        self.calls: list[UacCall] = []
        self.by_key: dict[ClientTransactionKey, UacCall] = {}
        self.serial = 0
        self.strays: list[Response] = []
        self.uas_dialogs: dict[str, Dialog] = {}
        self.other_responses: list[Response] = []
        self.auto_ack = True
        self.auto_prack = True
        self.auto_answer = {"BYE", "PRACK", "INFO", "UPDATE", "OPTIONS"}
        self.on_request: Callable[[RequestReceived], None] | None = None
        self.tag_counter = 0

    # -- UAC side --
    def invite(
        self,
        number: str = "0015550100",
        *,
        body: bytes = OFFER,
        extra: tuple[tuple[str, str], ...] = (),
        call_id: str | None = None,
    ) -> UacCall:
        host, port = self.address
        self.serial += 1
        headers = Headers()
        headers.add("Via", self.via())
        headers.add("Max-Forwards", "70")
        headers.add(
            "From",
            f'"Alice" <sip:0015550101@{host}>;tag={self.name}-f{self.serial}',
        )
        headers.add("To", f"<sip:{number}@{SBC[0]}>")
        headers.add("Call-ID", call_id or f"{self.name}-{self.serial}@{host}")
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", f"<sip:alice@{host}:{port}>")
        for name, value in extra:
            headers.set(name, value)
        if body:
            headers.add("Content-Type", "application/sdp")
        request = Request("INVITE", f"sip:{number}@{SBC[0]}", headers, body)
        key = self.layer.send_request(request, SBC, "UDP", self.lab.now)
        call = UacCall(request, key)
        self.calls.append(call)
        self.by_key[key] = call
        return call

    def resend_as(
        self, call: UacCall, *, method: str | None = None, call_id: str | None = None
    ) -> UacCall:
        """A copy of an earlier request on a fresh branch (merged, or OPTIONS)."""
        headers = call.invite.headers.copy()
        headers.set("Via", self.via())
        if call_id is not None:
            headers.set("Call-ID", call_id)
        if method is not None:
            headers.set("CSeq", f"1 {method}")
        request = Request(
            method or "INVITE", call.invite.uri, headers, call.invite.body
        )
        key = self.layer.send_request(request, SBC, "UDP", self.lab.now)
        sent = UacCall(request, key)
        self.calls.append(sent)
        self.by_key[key] = sent
        return sent

    def via(self) -> str:
        branch = new_branch(self.lab.rng.randbytes(8))
        return f"SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch={branch}"

    def cancel(self, call: UacCall) -> None:
        self.layer.cancel(call.key, self.lab.now)

    def send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        body: bytes = b"",
        extra: tuple[tuple[str, str], ...] = (),
        destination: Address = SBC,
    ) -> UacCall:
        request = dialog.build_request(method, self.via())
        for name, value in extra:
            request.headers.add(name, value)
        if body:
            request.headers.add("Content-Type", "application/sdp")
            request.body = body
        key = self.layer.send_request(request, destination, "UDP", self.lab.now)
        call = UacCall(request, key)
        self.calls.append(call)
        self.by_key[key] = call
        return call

    def ack(self, call: UacCall, response: Response, body: bytes = b"") -> None:
        dialog = call.dialogs.get(response.to_tag or "")
        if dialog is None:
            dialog = call.dialogs[response.to_tag or ""] = Dialog.as_uac(
                call.invite, response
            )
        ack = dialog.build_request("ACK", self.via(), cseq=call.invite.cseq.number)
        if body:
            ack.headers.add("Content-Type", "application/sdp")
            ack.body = body
        self.layer.send_stateless(
            ack, SBC if self.address != SBC else self.address, "UDP"
        )
        call.acks += 1

    # -- UAS side --
    def respond(
        self,
        event: RequestReceived,
        status: int,
        *,
        body: bytes = b"",
        tag: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
        contact: str | None = None,
    ) -> Response:
        request = event.request
        to_tag = None
        if request.to_tag is None and status > 100:
            to_tag = tag or f"{self.name}-t"
        response = make_response(request, status, to_tag=to_tag)
        if 100 < status < 300 and request.method in ("INVITE", "UPDATE"):
            response.headers.add(
                "Contact",
                contact or f"<sip:{self.name}@{self.address[0]}:{self.address[1]}>",
            )
        for name, value in extra:
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self.layer.send_response(response, self.lab.now, key=event.key)
        if request.method == "INVITE" and 100 < status < 300 and request.to_tag is None:
            local = response.to_tag or ""
            if local not in self.uas_dialogs:
                self.uas_dialogs[local] = Dialog.as_uas(
                    request,
                    local,
                    response.headers.get("Contact") or "",
                    early=status < 200,
                )
        return response

    def dialog(self) -> Dialog:
        return next(iter(self.uas_dialogs.values()))

    def last(self, method: str) -> RequestReceived:
        return [e for e in self.requests if e.request.method == method][-1]

    def methods(self) -> list[str]:
        return [e.request.method for e in self.requests]

    def after_input(self, now: float) -> None:
        while (event := self.layer.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self.requests.append(event)
                self.handle_request(event)
            elif isinstance(event, AckReceived):
                self.acks.append(event.request)
            elif isinstance(event, CancelReceived):
                self.cancels.append(event)
                self.handle_cancel(event)
            elif isinstance(event, ResponseReceived):
                self.handle_response(event)
            elif isinstance(event, StrayResponseReceived):
                self.strays.append(event.response)

    def handle_request(self, event: RequestReceived) -> None:
        if self.on_request is not None:
            self.on_request(event)
            return
        if (
            event.request.method in self.auto_answer
            and event.request.method != "INVITE"
        ):
            self.respond(event, 200)

    def handle_cancel(self, event: CancelReceived) -> None:
        status = 481 if event.cancelled_key is None else 200
        self.layer.send_response(
            make_response(event.request, status), self.lab.now, key=event.key
        )
        if event.cancelled_key is not None and event.pending:
            invite = next(e for e in self.requests if e.key == event.cancelled_key)
            self.respond(invite, 487)

    def handle_response(self, event: ResponseReceived) -> None:
        call = self.by_key.get(event.key)
        if call is None:
            self.other_responses.append(event.response)
            return
        response = event.response
        call.responses.append(response)
        tag = response.to_tag
        if call.invite.method != "INVITE" or tag is None or response.status >= 300:
            return
        if tag not in call.dialogs:
            call.dialogs[tag] = Dialog.as_uac(call.invite, response)
        if response.status >= 200:
            call.dialogs[tag].confirm(response)
            if self.auto_ack:
                self.ack(call, response)
        elif self.auto_prack and "100rel" in response.require and response.rseq:
            self.send_in_dialog(
                call.dialogs[tag],
                "PRACK",
                extra=(("RAck", f"{response.rseq} {call.invite.cseq.number} INVITE"),),
            )


class Lab:
    """The caller, the SBC and two callees on one fake clock."""

    def __init__(
        self,
        *,
        seed: int = 7,
        config: Config | None = None,
        policy: SessionTimerPolicy | None = None,
        bodies: object | None = None,
    ) -> None:
        self.now = 1_000_000.0
        self.rng = random.Random(seed)
        self.bodies = bodies
        self.wire: list[Wire] = []
        self.drop: Callable[[Wire], bool] | None = None
        self.caller = Phone(self, CALLER, "alice")
        self.sbc = SbcNode(self, config or lab_config(), policy or SessionTimerPolicy())
        self.callee = Phone(self, CALLEE, "bob")
        self.backup = Phone(self, BACKUP, "carol")
        self.nodes: dict[Address, Node] = {
            n.address: n for n in (self.caller, self.sbc, self.callee, self.backup)
        }

    @property
    def engine(self) -> B2bua:
        return self.sbc.engine

    def run(self, limit: int = 10_000) -> None:
        """Deliver messages until nobody has anything to send."""
        for _ in range(limit):
            moved = False
            for node in list(self.nodes.values()):
                for data, destination, transport in node.layer.datagrams_to_send():
                    moved = True
                    wire = Wire(node.address, destination, data, self.now)
                    self.wire.append(wire)
                    if self.drop is not None and self.drop(wire):
                        continue
                    self.deliver(wire, transport)
            if not moved:
                return
        raise AssertionError("messages kept flowing")

    def deliver(self, wire: Wire, transport: str) -> None:
        target = self.nodes.get(wire.destination)
        if target is None:
            return  # nobody at that address: the datagram is lost
        message = parse(wire.data)
        if isinstance(message, Request):
            target.layer.receive_request(message, wire.source, transport, self.now)
        else:
            target.layer.receive_response(message, wire.source, transport, self.now)
        target.after_input(self.now)

    def advance(self, seconds: float, limit: int = 100_000) -> None:
        """Move the clock on, firing every timer due on the way."""
        end = self.now + seconds
        self.run()
        for _ in range(limit):
            due = [t for n in self.nodes.values() if (t := n.timer()) is not None]
            soonest = min(due, default=None)
            if soonest is None or soonest > end:
                self.now = end
                return
            self.now = max(self.now, soonest)
            for node in list(self.nodes.values()):
                node.fire(self.now)
            self.run()
        raise AssertionError("timers kept firing")

    def sent_by(
        self, source: Address, destination: Address | None = None
    ) -> list[Request | Response]:
        return [
            w.message
            for w in self.wire
            if w.source == source
            and (destination is None or w.destination == destination)
        ]

    def requests_between(
        self, source: Address, destination: Address, method: str
    ) -> list[Request]:
        return [
            m
            for m in self.sent_by(source, destination)
            if isinstance(m, Request) and m.method == method
        ]

    def assert_clean(self) -> None:
        """After every timer ran out, nothing is left anywhere."""
        self.advance(600)
        for node in self.nodes.values():
            assert len(node.layer) == 0, node
            assert node.layer.next_timer() is None
        assert set(self.engine.table_sizes().values()) == {0}, self.engine.table_sizes()
        assert self.engine.next_timer() is None


def answer_call(lab: Lab, *, body: bytes = ANSWER, ringing: bool = True) -> UacCall:
    """Caller INVITEs, callee rings and answers; returns the caller's call."""
    call = lab.caller.invite()
    lab.run()
    invite = lab.callee.last("INVITE")
    if ringing:
        lab.callee.respond(invite, 180)
    lab.callee.respond(invite, 200, body=body)
    lab.run()
    return call
