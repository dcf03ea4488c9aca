"""The answering core, driven through the real transaction layer, sans-IO.

Each test feeds literal SIP text to the transaction layer, hands its events
to the core, sends the core's responses back through the layer and reads
what the layer would put on the wire, with a fake clock.
"""

from __future__ import annotations

import itertools

import pytest

from sbc.sip.core import CorePolicy, SipCore
from sbc.sip.message import Request, Response
from sbc.sip.parser import parse_message, validate_request
from sbc.sip.transaction import TransactionLayer

SOURCE = ("192.0.2.10", 5060)


class Harness:
    """A transaction layer and a core joined as the endpoint joins them."""

    def __init__(self, policy: CorePolicy | None = None) -> None:
        tags = (f"tag{n}" for n in itertools.count(1))
        self.layer = TransactionLayer()
        self.core = SipCore(policy or CorePolicy(), lambda: next(tags))
        self.now = 0.0

    def receive(self, data: bytes) -> list[Response]:
        request = parse_message(data)
        assert isinstance(request, Request)
        validate_request(request)
        self.layer.receive_request(request, SOURCE, "UDP", self.now)
        return self._drain()

    def advance(self, seconds: float) -> list[Response]:
        self.now += seconds
        self.layer.handle_timer(self.now)
        for ready in self.core.handle_timer(self.now):
            self.layer.send_response(ready.response, self.now, key=ready.key)
        return self._drain()

    def _drain(self) -> list[Response]:
        while (event := self.layer.next_event()) is not None:
            for ready in self.core.handle_event(event, self.now):
                self.layer.send_response(ready.response, self.now, key=ready.key)
        sent = []
        for transmission in self.layer.datagrams_to_send():
            message = parse_message(transmission.data)
            assert isinstance(message, Response)
            sent.append(message)
        return sent


def sip(
    method: str,
    *,
    uri: str = "sip:sbc.example.com",
    branch: str = "z9hG4bKcore1",
    cseq_method: str | None = None,
    to_tag: str | None = None,
    extra: str = "",
    body: bytes = b"",
) -> bytes:
    to = "<sip:+15550100@sbc.example.com>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15550101@192.0.2.10>;tag=f1\r\n"
        f"To: {to}\r\n"
        "Call-ID: core-1@192.0.2.10\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def finals(responses: list[Response]) -> list[Response]:
    return [r for r in responses if r.status >= 200]


def only_final(responses: list[Response]) -> Response:
    [final] = finals(responses)
    return final


def test_options_to_sbc_answered_200_with_capabilities():
    harness = Harness(CorePolicy(supported=("path",)))

    response = only_final(harness.receive(sip("OPTIONS")))

    assert response.status == 200
    assert response.headers.values("Allow") == [
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
    ]
    assert response.headers.values("Accept") == ["application/sdp"]
    assert response.supported == ["path"]
    assert response.to_tag is not None


def test_options_with_max_forwards_zero_to_sbc_answered_200():
    # RFC 3261 §11: the SBC answers for itself; nothing would be forwarded.
    harness = Harness()
    data = sip("OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")

    assert only_final(harness.receive(data)).status == 200


@pytest.mark.parametrize(
    ("method", "uri"),
    [
        ("INVITE", "sip:+15550100@sbc.example.com"),
        ("OPTIONS", "sip:+15550100@sbc.example.com"),
    ],
)
def test_max_forwards_zero_on_forwarded_request_answered_483(method, uri):
    harness = Harness()
    data = sip(method, uri=uri).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")

    response = only_final(harness.receive(data))

    assert response.status == 483
    assert response.to_tag is not None


@pytest.mark.parametrize("method", ["REGISTER", "SUBSCRIBE", "FOOBAR", "MESSAGE"])
def test_unserved_method_answered_501_with_allow(method):
    harness = Harness()

    response = only_final(harness.receive(sip(method)))

    assert response.status == 501
    assert "OPTIONS" in response.headers.values("Allow")
    assert method in response.reason


def test_require_unknown_extension_answered_420_with_unsupported():
    harness = Harness(CorePolicy(supported=("timer",)))
    data = sip("OPTIONS", extra="Require: timer, 100rel, foo\r\n")

    response = only_final(harness.receive(data))

    assert response.status == 420
    assert response.unsupported == ["100rel", "foo"]


def test_require_supported_extension_accepted():
    harness = Harness(CorePolicy(supported=("timer",)))

    response = only_final(harness.receive(sip("OPTIONS", extra="Require: timer\r\n")))

    assert response.status == 200


def test_cancel_with_require_not_answered_420():
    # RFC 3261 §8.2.2.3: Require is ignored on CANCEL.
    harness = Harness()

    response = only_final(harness.receive(sip("CANCEL", extra="Require: foo\r\n")))

    assert response.status == 481


@pytest.mark.parametrize("method", ["BYE", "INVITE", "OPTIONS"])
def test_request_inside_unknown_dialog_answered_481(method):
    harness = Harness()

    response = only_final(harness.receive(sip(method, to_tag="peer-tag")))

    assert response.status == 481
    assert response.to_tag == "peer-tag"


def test_bye_outside_dialog_answered_481():
    harness = Harness()

    response = only_final(harness.receive(sip("BYE")))

    assert response.status == 481
    assert response.to_tag is not None


def test_invite_answered_100_then_480_no_route():
    harness = Harness()

    responses = harness.receive(sip("INVITE"))

    assert [r.status for r in responses] == [100, 480]
    assert responses[0].to_tag is None
    assert "no route" in responses[1].reason
    assert responses[1].to_tag is not None


def test_invite_480_waits_for_no_route_delay():
    harness = Harness(CorePolicy(no_route_delay=2.0))

    assert [r.status for r in harness.receive(sip("INVITE"))] == [100]
    assert finals(harness.advance(1.9)) == []
    assert [r.status for r in finals(harness.advance(0.2))] == [480]


def test_cancel_pending_invite_answered_200_and_487_with_same_tag():
    harness = Harness(CorePolicy(no_route_delay=5.0))
    harness.receive(sip("INVITE"))

    responses = harness.receive(sip("CANCEL"))

    by_method = {r.cseq.method: r for r in responses}
    assert by_method["CANCEL"].status == 200
    assert by_method["INVITE"].status == 487
    assert by_method["CANCEL"].to_tag == by_method["INVITE"].to_tag
    # The INVITE is answered once: no 480 follows the 487.
    assert all(r.status != 480 for r in finals(harness.advance(10.0)))


def test_cancel_after_final_answered_200_only():
    harness = Harness()
    harness.receive(sip("INVITE"))

    responses = harness.receive(sip("CANCEL"))

    assert [(r.status, r.cseq.method) for r in responses] == [(200, "CANCEL")]


def test_cancel_without_matching_invite_answered_481():
    harness = Harness()

    response = only_final(harness.receive(sip("CANCEL", branch="z9hG4bKnothing")))

    assert response.status == 481


def test_ack_for_non_2xx_absorbed_without_answer():
    harness = Harness()
    [_, final] = harness.receive(sip("INVITE"))
    ack = sip("ACK", to_tag=final.to_tag, cseq_method="ACK")

    assert harness.receive(ack) == []


def test_invite_with_non_sdp_body_answered_415_with_accept():
    harness = Harness()
    data = sip("INVITE", extra="Content-Type: text/plain\r\n", body=b"hello")

    response = only_final(harness.receive(data))

    assert response.status == 415
    assert response.headers.values("Accept") == ["application/sdp"]


def test_invite_with_sdp_body_reaches_no_route():
    harness = Harness()
    body = (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    )
    data = sip("INVITE", extra="Content-Type: application/sdp\r\n", body=body)

    assert only_final(harness.receive(data)).status == 480


def test_unsupported_uri_scheme_answered_416():
    harness = Harness()

    response = only_final(harness.receive(sip("OPTIONS", uri="mailto:ops@example.com")))

    assert response.status == 416


def test_tel_uri_invite_reaches_no_route():
    harness = Harness()

    assert only_final(harness.receive(sip("INVITE", uri="tel:+15550100"))).status == 480


def test_malformed_require_answered_400_naming_header():
    harness = Harness()

    response = only_final(harness.receive(sip("OPTIONS", extra="Require: a b\r\n")))

    assert response.status == 400
    assert "Require" in response.reason


def test_every_final_response_carries_a_to_tag():
    harness = Harness(CorePolicy(no_route_delay=1.0))
    requests = [
        sip("OPTIONS", branch="z9hG4bKt1"),
        sip("REGISTER", branch="z9hG4bKt2"),
        sip("BYE", branch="z9hG4bKt3"),
        sip("INVITE", branch="z9hG4bKt4"),
        sip("CANCEL", branch="z9hG4bKt4"),
        sip("CANCEL", branch="z9hG4bKt5"),
    ]

    responses = [r for data in requests for r in harness.receive(data)]
    responses += harness.advance(2.0)

    answered = {(r.top_via.branch, r.cseq.method): r.status for r in finals(responses)}
    assert answered == {
        ("z9hG4bKt1", "OPTIONS"): 200,
        ("z9hG4bKt2", "REGISTER"): 501,
        ("z9hG4bKt3", "BYE"): 481,
        ("z9hG4bKt4", "INVITE"): 487,
        ("z9hG4bKt4", "CANCEL"): 200,
        ("z9hG4bKt5", "CANCEL"): 481,
    }
    assert all(r.to_tag for r in finals(responses))
