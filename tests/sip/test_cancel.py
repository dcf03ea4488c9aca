"""CANCEL on both sides of the transaction layer (RFC 3261 §9) and case C11."""

from __future__ import annotations

import pytest
from transaction_harness import UAC, UAS, Driver, request, response_to

from sbc.sip.events import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    TransactionTerminated,
    TransactionTimedOut,
)
from sbc.sip.message import Request, make_response
from sbc.sip.requests import build_cancel, new_branch
from sbc.sip.timers import Timer
from sbc.sip.transaction import ClientTransactionKey, State

ROUTES = ("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>")


def calling(transport: str = "UDP", destination=UAS):
    driver = Driver()
    invite = request("INVITE", transport=transport, routes=ROUTES, to_tag=None)
    key = driver.layer.send_request(invite, destination, transport, driver.now)
    driver.collect()
    driver.take_sent()
    return driver, invite, key


def sent_requests(driver: Driver) -> list[Request]:
    return [s.message for s in driver.take_sent() if isinstance(s.message, Request)]


# -- Building the CANCEL (§9.1) ------------------------------------------------


@pytest.mark.parametrize("one_via_line", [False, True])
def test_build_cancel_copies_identity_of_invite(one_via_line):
    invite = request(
        "INVITE", routes=ROUTES, cseq=314, to_tag="dlg7", one_via_line=one_via_line
    )

    cancel = build_cancel(invite)

    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.headers.get_all("Via") == [invite.headers.values("Via")[0]]
    assert len(cancel.via) == 1 and len(invite.via) == 2
    for name in ("From", "To", "Call-ID"):
        assert cancel.headers.get(name) == invite.headers.get(name)
    assert (cancel.cseq.number, cancel.cseq.method) == (314, "CANCEL")
    assert cancel.headers.values("Route") == list(ROUTES)
    assert cancel.max_forwards == 70 and cancel.body == b""


def test_build_cancel_serializes_and_parses_back():
    from sbc.sip.parser import parse_message, validate_request

    cancel = parse_message(build_cancel(request("INVITE")).to_bytes())

    validate_request(cancel)
    assert cancel.headers.get("Content-Length") == "0"


def test_new_branch_has_magic_cookie_and_needs_entropy():
    assert new_branch(bytes(range(8))) == "z9hG4bK0001020304050607"
    with pytest.raises(ValueError):
        new_branch(b"short")


# -- Client side: when the CANCEL may go (§9.1) ----------------------------------


def test_cancel_held_back_until_provisional():
    driver, invite, key = calling()

    cancel_key = driver.layer.cancel(key, driver.now)
    driver.advance(0.7)
    assert [r.method for r in sent_requests(driver)] == ["INVITE"]  # Timer A only

    driver.receive(response_to(invite, 180, to_tag="ring"), UAS)

    (cancel,) = sent_requests(driver)
    assert cancel.method == "CANCEL"
    assert cancel_key == ClientTransactionKey(key.branch, "CANCEL")
    assert cancel.top_via.branch.lower() == key.branch
    assert cancel.to_tag is None  # the INVITE's To, not the 1xx's (§9.1)


def test_cancel_in_proceeding_sent_at_once_to_same_destination():
    driver, invite, key = calling()
    driver.receive(response_to(invite, 183), UAS)
    driver.take_events()

    cancel_key = driver.layer.cancel(key, driver.now)
    driver.collect()

    (sent,) = driver.take_sent()
    assert sent.message.method == "CANCEL"
    assert (sent.transmission.destination, sent.transmission.transport) == (UAS, "UDP")
    assert driver.layer.state(cancel_key) is State.TRYING


def test_c06_cancel_follows_invite_destination_and_transport():
    # The INVITE went over TCP to an explicit port: the CANCEL must too.
    destination = ("192.0.2.30", 5070)
    driver, invite, key = calling("TCP", destination)
    driver.receive(response_to(invite, 100), destination, "TCP")

    driver.layer.cancel(key, driver.now)
    driver.collect()

    (sent,) = driver.take_sent()
    assert sent.message.method == "CANCEL"
    assert sent.message.top_via.transport == "TCP"
    assert (sent.transmission.destination, sent.transmission.transport) == (
        destination,
        "TCP",
    )


def test_cancel_twice_sends_one_cancel():
    driver, invite, key = calling()
    driver.receive(response_to(invite, 180), UAS)

    first = driver.layer.cancel(key, driver.now)
    second = driver.layer.cancel(key, driver.now)
    driver.collect()

    assert first == second
    assert [r.method for r in sent_requests(driver)] == ["CANCEL"]


@pytest.mark.parametrize("cancel_ends_by", ["its_200_and_timer_k", "transport_error"])
def test_cancel_again_after_cancel_transaction_ended_sends_nothing(cancel_ends_by):
    # §9.1: one CANCEL per INVITE. Once it has ended, a second cancel() must
    # neither send another nor push back the 64*T1 wait for the 487.
    driver, invite, key = calling()
    driver.receive(response_to(invite, 180), UAS)
    cancel_key = driver.layer.cancel(key, driver.now)
    driver.collect()
    (cancel,) = sent_requests(driver)
    if cancel_ends_by == "transport_error":
        driver.layer.report_transport_error(UAS, "UDP", driver.now)
    else:
        driver.receive(response_to(cancel, 200), UAS)
    driver.advance(10.0)
    driver.collect()
    assert driver.layer.state(cancel_key) is None
    driver.take_events()

    again = driver.layer.cancel(key, driver.now)
    driver.advance(32.0)

    assert again == cancel_key
    assert sent_requests(driver) == []
    assert driver.layer.state(key) is None
    ended = [e for e in driver.take_events() if isinstance(e, TransactionTerminated)]
    assert ended == [TransactionTerminated(key)]


@pytest.mark.parametrize("status", [200, 486])
def test_cancel_after_final_response_not_sent(status):
    driver, invite, key = calling()
    driver.receive(response_to(invite, status), UAS)
    driver.take_sent()

    assert driver.layer.cancel(key, driver.now) is None
    driver.collect()
    assert driver.take_sent() == []


def test_held_back_cancel_dropped_when_final_arrives_first():
    driver, invite, key = calling()
    driver.layer.cancel(key, driver.now)

    driver.receive(response_to(invite, 486), UAS)
    driver.advance(40.0)

    assert [r.method for r in sent_requests(driver)] == ["ACK"]
    assert len(driver.layer) == 0


def test_held_back_cancel_dropped_on_timer_b():
    driver, _, key = calling()
    driver.layer.cancel(key, driver.now)

    driver.advance(40.0)

    assert {r.method for r in sent_requests(driver)} == {"INVITE"}
    assert (32.0, TransactionTimedOut(key, Timer.B)) in driver.events
    assert len(driver.layer) == 0


def test_cancel_unknown_or_non_invite_returns_none():
    driver, _, _ = calling()
    options_key = driver.layer.send_request(
        request("OPTIONS", branch="z9hG4bKopt"), UAS, "UDP", driver.now
    )

    assert driver.layer.cancel(options_key, driver.now) is None
    assert driver.layer.cancel(ClientTransactionKey("z9hg4bknone", "INVITE"), 0) is None


def test_cancelled_invite_487_acked_and_both_transactions_end():
    driver, invite, key = calling()
    driver.receive(response_to(invite, 180), UAS)
    cancel_key = driver.layer.cancel(key, driver.now)
    driver.collect()
    (cancel,) = sent_requests(driver)
    driver.take_events()

    ok = response_to(cancel, 200)
    terminated = response_to(invite, 487)
    driver.receive(ok, UAS)
    driver.receive(terminated, UAS)
    driver.advance(100.0)

    assert [r.method for r in sent_requests(driver)] == ["ACK"]
    assert driver.take_events() == [
        ResponseReceived(ok, cancel_key, UAS),
        ResponseReceived(terminated, key, UAS),
        TransactionTerminated(cancel_key),  # Timer K, T4 = 5 s
        TransactionTerminated(key),  # Timer D, 32 s
    ]


# -- Server side: matching the CANCEL (§9.2) ---------------------------------------


def server_with_invite(transport: str = "UDP"):
    driver = Driver()
    invite = request("INVITE", transport=transport)
    driver.receive(invite, UAC, transport)
    (event,) = driver.take_events()
    driver.take_sent()
    return driver, invite, event.key


def test_cancel_matches_pending_invite():
    driver, invite, invite_key = server_with_invite()
    cancel = build_cancel(invite)

    driver.receive(cancel, UAC)

    (event,) = driver.take_events()
    assert isinstance(event, CancelReceived)
    assert event.cancelled_key == invite_key and event.pending
    assert event.key.method == "CANCEL" and event.key != invite_key
    assert driver.take_sent() == []  # the TU answers, not the layer


def test_cancel_then_tu_answers_200_and_487_and_ack_absorbed():
    driver, invite, invite_key = server_with_invite()
    driver.receive(build_cancel(invite), UAC)
    (event,) = driver.take_events()

    driver.layer.send_response(make_response(event.request, 200), driver.now)
    driver.layer.send_response(make_response(invite, 487, to_tag="t487"), driver.now)
    driver.collect()
    driver.receive(request("ACK", to_tag="t487"), UAC)
    driver.advance(100.0)

    assert [s.message.status for s in driver.take_sent()][:2] == [200, 487]
    assert driver.take_events() == [
        TransactionTerminated(invite_key),  # Timer I, T4 after the ACK
        TransactionTerminated(event.key),  # Timer J, 64*T1
    ]
    assert len(driver.layer) == 0


def test_cancel_retransmission_resends_its_response():
    driver, invite, _ = server_with_invite()
    cancel = build_cancel(invite)
    driver.receive(cancel, UAC)
    (event,) = driver.take_events()
    driver.layer.send_response(make_response(cancel, 200), driver.now, key=event.key)

    driver.receive(build_cancel(invite), UAC)
    driver.collect()

    assert [s.message.status for s in driver.take_sent()] == [200, 200]
    assert driver.take_events() == []


def test_cancel_unknown_transaction_left_to_tu_for_481():
    driver = Driver()
    cancel = build_cancel(request("INVITE", branch="z9hG4bKgone"))

    driver.receive(cancel, UAC)

    (event,) = driver.take_events()
    assert isinstance(event, CancelReceived)
    assert event.cancelled_key is None and not event.pending
    answer = make_response(cancel, 481)
    driver.layer.send_response(answer, driver.now, key=event.key)
    driver.collect()
    assert [s.message.status for s in driver.take_sent()] == [481]


@pytest.mark.parametrize("final", [200, 486])
def test_cancel_after_final_response_has_no_effect(final):
    driver, invite, invite_key = server_with_invite()
    driver.layer.send_response(make_response(invite, final, to_tag="t"), driver.now)
    driver.collect()
    state_before = driver.layer.state(invite_key)

    driver.receive(build_cancel(invite), UAC)

    (event,) = driver.take_events()
    assert event.cancelled_key == invite_key and not event.pending
    assert driver.layer.state(invite_key) is state_before


def test_cancel_with_other_sent_by_does_not_match():
    driver, invite, _ = server_with_invite()
    other = build_cancel(request("INVITE", via_host="192.0.2.11"))

    driver.receive(other, ("192.0.2.11", 5060))

    (event,) = driver.take_events()
    assert event.cancelled_key is None


def test_cancel_matches_pending_non_invite():
    driver = Driver()
    options = request("OPTIONS", branch="z9hG4bKslow")
    driver.receive(options, UAC)
    (opened,) = driver.take_events()

    driver.receive(build_cancel(options), UAC)

    (event,) = driver.take_events()
    assert event.cancelled_key == opened.key and event.pending


def test_rfc2543_cancel_matched_without_branch():
    driver = Driver()
    invite = request("INVITE", branch=None)
    driver.receive(invite, UAC)
    (opened,) = driver.take_events()

    driver.receive(build_cancel(invite), UAC)

    (event,) = driver.take_events()
    assert isinstance(opened, RequestReceived)
    assert event.cancelled_key == opened.key and event.pending


# -- C11: CANCEL crosses 200 OK ------------------------------------------------------


def test_c11_cancel_crosses_200_on_client_side():
    driver, invite, key = calling()
    driver.receive(response_to(invite, 180), UAS)
    cancel_key = driver.layer.cancel(key, driver.now)
    driver.collect()
    (cancel,) = sent_requests(driver)
    driver.take_events()

    # The callee answered before the CANCEL arrived: 200 to the INVITE, then
    # 200 to the CANCEL (which had no effect there).
    ok_invite = response_to(invite, 200, to_tag="callee")
    ok_cancel = response_to(cancel, 200, to_tag="callee")
    driver.receive(ok_invite, UAS)
    driver.receive(ok_cancel, UAS)

    assert driver.take_events() == [
        ResponseReceived(ok_invite, key, UAS),  # the TU ACKs it, then BYEs it
        ResponseReceived(ok_cancel, cancel_key, UAS),
    ]
    assert driver.layer.state(key) is State.ACCEPTED
    driver.advance(100.0)
    assert len(driver.layer) == 0


def test_c11_cancel_after_2xx_then_bye_before_ack_on_server_side():
    driver, invite, invite_key = server_with_invite()
    driver.layer.send_response(make_response(invite, 200, to_tag="sbc"), driver.now)
    driver.collect()

    driver.receive(build_cancel(invite), UAC)
    (cancel_event,) = driver.take_events()
    bye = request("BYE", branch="z9hG4bKbye", cseq=2, to_tag="sbc")
    driver.receive(bye, UAC)
    (bye_event,) = driver.take_events()

    assert not cancel_event.pending  # 200 to the CANCEL, nothing else
    assert isinstance(bye_event, RequestReceived)  # the BYE is honoured
    ack = request("ACK", branch="z9hG4bKack", to_tag="sbc")
    driver.receive(ack, UAC)
    assert driver.take_events() == [AckReceived(ack, UAC, "UDP", None)]
    driver.layer.send_response(make_response(cancel_event.request, 200), driver.now)
    driver.layer.send_response(make_response(bye, 200), driver.now)
    driver.advance(100.0)
    assert len(driver.layer) == 0


def test_tu_answers_cancel_without_key_by_branch():
    driver, invite, _ = server_with_invite("TCP")
    cancel = build_cancel(invite)
    driver.receive(cancel, UAC, "TCP")
    (event,) = driver.take_events()

    driver.layer.send_response(make_response(cancel, 200), driver.now)
    driver.collect()

    (sent,) = driver.take_sent()
    assert sent.message.status == 200
    assert driver.layer.state(event.key) is None  # Timer J is 0 over TCP


# -- §9.1: no final response 64*T1 after the CANCEL ----------------------------------


def test_invite_destroyed_64_t1_after_unanswered_cancel():
    driver, invite, key = calling()
    driver.receive(response_to(invite, 180), UAS)
    driver.advance(10.0)
    cancel_key = driver.layer.cancel(key, driver.now)
    driver.collect()
    driver.take_events()

    driver.advance(10.0 + 64 * 0.5 - 0.01)
    assert driver.layer.state(key) is State.PROCEEDING
    driver.advance(10.0 + 64 * 0.5)

    events = driver.take_events()
    assert TransactionTimedOut(cancel_key, Timer.F) in events
    assert events[-2:] == [
        TransactionTimedOut(key, Timer.CANCEL),
        TransactionTerminated(key),
    ]
    assert len(driver.layer) == 0


def test_held_back_cancel_wait_starts_when_cancel_sent():
    driver, invite, key = calling()
    driver.layer.cancel(key, driver.now)
    driver.advance(5.0)

    driver.receive(response_to(invite, 183), UAS)  # the CANCEL goes now
    driver.advance(5.0 + 31.99)
    assert driver.layer.state(key) is State.PROCEEDING
    driver.advance(5.0 + 32.0)

    assert driver.layer.state(key) is None


def test_final_after_cancel_stops_cancel_wait():
    driver, invite, key = calling()
    driver.receive(response_to(invite, 180), UAS)
    driver.layer.cancel(key, driver.now)
    driver.advance(10.0)

    driver.receive(response_to(invite, 200), UAS)
    driver.advance(40.0)

    assert driver.layer.state(key) is State.ACCEPTED  # Timer M ends it at 42 s
    assert not any(
        isinstance(e, TransactionTimedOut) and e.key == key for _, e in driver.events
    )
