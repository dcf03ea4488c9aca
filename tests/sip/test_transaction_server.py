"""Server transactions against RFC 3261 Figures 7 and 8, with RFC 6026."""

from __future__ import annotations

import gc
from itertools import pairwise

import pytest
from transaction_harness import UAC, Driver, request

from sbc.sip.events import (
    AckReceived,
    RequestReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportErrorOccurred,
)
from sbc.sip.message import Response, make_response
from sbc.sip.timers import Timer, TimerValues
from sbc.sip.transaction import (
    ResponseNotAllowed,
    ServerTransactionKey,
    State,
    TransactionError,
    TransactionLayer,
    TransactionNotFound,
)

# RFC 3261 §17.2.1 with T1 = 0.5 s, T2 = 4 s: after the final response at 0,
# Timer G resends it at these offsets until Timer H fires at 64*T1 = 32 s.
FINAL_RETRANSMIT_OFFSETS = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


def receive(method: str = "INVITE", transport: str = "UDP", **kwargs):
    layer = TransactionLayer(
        kwargs.pop("timers", TimerValues()), **kwargs.pop("opts", {})
    )
    driver = Driver(layer)
    req = request(method, transport=transport, **kwargs)
    driver.receive(req, UAC, transport)
    (event,) = driver.take_events()
    assert isinstance(event, RequestReceived) and event.request is req
    return driver, req, event.key


def statuses(driver: Driver) -> list[int]:
    return [s.message.status for s in driver.take_sent()]


def answer(driver: Driver, req, status: int, key=None, to_tag="uas1") -> Response:
    response = make_response(req, status, to_tag=to_tag)
    driver.layer.send_response(response, driver.now, key=key)
    driver.collect()
    return response


# -- INVITE server: Proceeding -------------------------------------------------


def test_invite_opens_transaction_and_sends_100_trying():
    driver, req, key = receive()

    (trying,) = driver.take_sent()

    assert trying.message.status == 100
    assert trying.transmission.destination == UAC
    assert trying.message.headers.get_all("Via") == req.headers.get_all("Via")
    assert trying.message.to_tag is None  # §17.2.1: SHOULD NOT add a tag
    assert key == ServerTransactionKey("INVITE", ("192.0.2.10", 5060), "z9hg4bktx1")
    assert driver.layer.state(key) is State.PROCEEDING


def test_invite_without_automatic_trying_sends_nothing():
    driver, _, _ = receive(opts={"send_trying": False})

    assert driver.take_sent() == []


def test_invite_retransmission_resends_last_provisional():
    driver, req, key = receive()
    driver.take_sent()

    driver.receive(request(), UAC)
    assert statuses(driver) == [100]
    answer(driver, req, 180)
    driver.receive(request(), UAC)
    driver.receive(request(), UAC)

    assert statuses(driver) == [180, 180, 180]
    assert driver.take_events() == []  # retransmissions never reach the TU


def test_invite_retransmission_without_provisional_absorbed():
    driver, _, _ = receive(opts={"send_trying": False})

    driver.receive(request(), UAC)

    assert driver.take_sent() == [] and driver.take_events() == []


def test_invite_provisional_not_retransmitted_by_timer():
    driver, req, key = receive()
    answer(driver, req, 183)
    driver.take_sent()

    driver.advance(300.0)

    assert driver.take_sent() == [] and driver.layer.state(key) is State.PROCEEDING


def test_invite_transport_error_in_proceeding_terminates():
    driver, req, key = receive(transport="TCP")

    driver.layer.report_transport_error(UAC, "TCP", driver.now)
    driver.collect()

    assert driver.take_events() == [
        TransportErrorOccurred(key),
        TransactionTerminated(key),
    ]
    with pytest.raises(TransactionNotFound):
        answer(driver, req, 486, key=key)


# -- INVITE server: Completed and Confirmed ------------------------------------


def test_invite_failure_retransmitted_by_timer_g_until_timer_h_udp():
    driver, req, key = receive()
    driver.advance(2.0)
    driver.take_sent()

    answer(driver, req, 486)
    driver.advance(2.0 + 64 * 0.5 + 1)

    sent = driver.take_sent()
    assert {s.message.status for s in sent} == {486}
    assert [s.time - 2.0 for s in sent[1:]] == FINAL_RETRANSMIT_OFFSETS
    assert max(b.time - a.time for a, b in pairwise(sent)) == TimerValues().t2
    assert driver.take_events() == [
        TransactionTimedOut(key, Timer.H),
        TransactionTerminated(key),
    ]
    assert driver.events == [] and len(driver.layer) == 0


@pytest.mark.parametrize(("t1", "t2"), [(0.1, 0.8), (0.25, 4.0)])
def test_invite_timer_g_custom_t1_t2(t1, t2):
    driver, req, _ = receive(timers=TimerValues(t1=t1, t2=t2))
    driver.take_sent()

    answer(driver, req, 480)
    driver.advance(64 * t1 + 1)

    times = [s.time for s in driver.take_sent()]
    expected, interval = [0.0], t1
    while expected[-1] + interval < 64 * t1:
        expected.append(expected[-1] + interval)
        interval = min(2 * interval, t2)
    assert times == pytest.approx(expected)


def test_invite_retransmission_in_completed_resends_final():
    driver, req, _ = receive()
    answer(driver, req, 404)
    driver.take_sent()

    driver.receive(request(), UAC)

    assert statuses(driver) == [404]
    assert driver.take_events() == []


def test_invite_ack_confirms_stops_g_and_timer_i_t4_udp():
    driver, req, key = receive()
    busy = answer(driver, req, 486)
    driver.advance(0.6)  # one Timer G retransmission at 0.5
    driver.take_sent()
    ack = request("ACK", to_tag=busy.to_tag)

    driver.receive(ack, UAC)
    driver.receive(request("ACK", to_tag=busy.to_tag), UAC)  # ACK retransmission
    assert driver.layer.state(key) is State.CONFIRMED
    driver.advance(0.6 + 4.99)
    assert driver.layer.state(key) is State.CONFIRMED
    driver.advance(0.6 + 5.0)

    assert driver.take_sent() == []
    assert driver.take_events() == [TransactionTerminated(key)]  # ACK absorbed
    assert len(driver.layer) == 0 and driver.layer.next_timer() is None


@pytest.mark.parametrize("transport", ["TCP", "TLS"])
def test_invite_failure_reliable_no_timer_g_and_timer_i_zero(transport):
    driver, req, key = receive(transport=transport)
    busy = answer(driver, req, 486)
    driver.advance(20.0)

    assert statuses(driver) == [100, 486]  # no Timer G on a reliable transport
    driver.receive(request("ACK", to_tag=busy.to_tag, transport=transport), UAC)

    assert driver.take_events() == [TransactionTerminated(key)]
    assert len(driver.layer) == 0


def test_invite_timer_h_reliable_still_64_t1():
    driver, req, key = receive(transport="TCP")
    answer(driver, req, 486)

    driver.advance(31.99)
    assert driver.layer.state(key) is State.COMPLETED
    driver.advance(32.0)

    assert driver.take_events() == [
        TransactionTimedOut(key, Timer.H),
        TransactionTerminated(key),
    ]


def test_invite_transport_error_in_completed_terminates():
    driver, req, key = receive(transport="TCP")
    answer(driver, req, 500)

    driver.layer.report_transport_error(UAC, "TCP", driver.now)
    driver.collect()

    assert driver.take_events() == [
        TransportErrorOccurred(key),
        TransactionTerminated(key),
    ]


# -- INVITE server: Accepted (RFC 6026) ----------------------------------------


def test_invite_2xx_enters_accepted_and_absorbs_invite_retransmissions():
    driver, req, key = receive()
    answer(driver, req, 200)
    driver.take_sent()

    for _ in range(3):
        driver.receive(request(), UAC)
    driver.advance(10.0)

    assert driver.take_sent() == []  # no 2xx retransmission by the transaction
    assert driver.take_events() == []
    assert driver.layer.state(key) is State.ACCEPTED


def test_invite_accepted_sends_tu_2xx_retransmissions():
    driver, req, key = receive()
    ok = answer(driver, req, 200)

    for _ in range(2):
        driver.layer.send_response(ok, driver.now, key=key)
    driver.collect()

    assert statuses(driver) == [100, 200, 200, 200]


def test_invite_accepted_passes_ack_to_tu():
    driver, req, key = receive()
    answer(driver, req, 200)
    same_branch = request("ACK", to_tag="uas1")
    own_branch = request("ACK", to_tag="uas1", branch="z9hG4bKack2xx")

    driver.receive(same_branch, UAC)
    driver.receive(own_branch, UAC)

    assert driver.take_events() == [
        AckReceived(same_branch, UAC, "UDP", key),
        AckReceived(own_branch, UAC, "UDP", None),
    ]


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_invite_timer_l_64_t1_then_2xx_sent_statelessly(transport):
    driver, req, key = receive(transport=transport)
    driver.advance(3.0)
    ok = answer(driver, req, 200)

    driver.advance(3.0 + 31.99)
    assert driver.layer.state(key) is State.ACCEPTED
    driver.advance(3.0 + 32.0)
    assert driver.take_events() == [TransactionTerminated(key)]
    driver.take_sent()
    driver.layer.send_response(ok, driver.now, key=key)
    driver.collect()

    (late,) = driver.take_sent()
    assert late.message.status == 200
    assert late.transmission.destination == UAC
    assert len(driver.layer) == 0


def test_invite_accepted_refuses_provisional_and_failure():
    driver, req, key = receive()
    answer(driver, req, 200)

    with pytest.raises(ResponseNotAllowed):
        answer(driver, req, 180)
    with pytest.raises(ResponseNotAllowed):
        answer(driver, req, 486)
    assert driver.layer.state(key) is State.ACCEPTED


def test_invite_completed_refuses_second_final():
    driver, req, key = receive()
    answer(driver, req, 486)

    with pytest.raises(ResponseNotAllowed):
        answer(driver, req, 200)
    with pytest.raises(ResponseNotAllowed):
        answer(driver, req, 500)
    assert statuses(driver) == [100, 486]


def test_invite_accepted_transport_error_reported_state_kept():
    driver, req, key = receive(transport="TCP")
    answer(driver, req, 200)

    driver.layer.report_transport_error(UAC, "TCP", driver.now)
    driver.collect()

    assert driver.take_events() == [TransportErrorOccurred(key)]
    assert driver.layer.state(key) is State.ACCEPTED


# -- Non-INVITE server ---------------------------------------------------------


def test_non_invite_trying_absorbs_retransmission_silently():
    driver, _, key = receive("OPTIONS")

    driver.receive(request("OPTIONS"), UAC)

    assert driver.take_sent() == [] and driver.take_events() == []
    assert driver.layer.state(key) is State.TRYING


def test_non_invite_proceeding_resends_provisional():
    driver, req, key = receive("REGISTER")
    answer(driver, req, 100, to_tag=None)

    driver.receive(request("REGISTER"), UAC)

    assert statuses(driver) == [100, 100]
    assert driver.layer.state(key) is State.PROCEEDING


@pytest.mark.parametrize("first", [None, 100])
def test_non_invite_completed_resends_final_and_timer_j_udp(first):
    driver, req, key = receive("BYE", to_tag="t9")
    if first is not None:
        answer(driver, req, first, to_tag=None)
    answer(driver, req, 200)

    driver.receive(request("BYE", to_tag="t9"), UAC)
    driver.advance(31.99)
    assert driver.layer.state(key) is State.COMPLETED
    driver.advance(32.0)

    assert statuses(driver)[-2:] == [200, 200]
    assert driver.take_events() == [TransactionTerminated(key)]


def test_non_invite_timer_j_zero_reliable():
    driver, req, key = receive("OPTIONS", transport="TLS")

    answer(driver, req, 200)

    assert driver.take_events() == [TransactionTerminated(key)]
    assert len(driver.layer) == 0


def test_non_invite_final_never_retransmitted_by_timer():
    driver, req, _ = receive("OPTIONS")
    answer(driver, req, 200)

    driver.advance(40.0)

    assert statuses(driver) == [200]


def test_non_invite_transport_error_in_completed():
    driver, req, key = receive("MESSAGE", transport="TCP")
    answer(driver, req, 100, to_tag=None)

    driver.layer.report_transport_error(UAC, "TCP", driver.now)
    driver.collect()

    assert driver.take_events() == [
        TransportErrorOccurred(key),
        TransactionTerminated(key),
    ]


def test_non_invite_refuses_response_after_final():
    driver, req, _ = receive("OPTIONS")
    answer(driver, req, 200)

    with pytest.raises(ResponseNotAllowed):
        answer(driver, req, 100, to_tag=None)


def test_send_response_without_transaction_refused():
    layer = TransactionLayer()
    req = request("OPTIONS")

    with pytest.raises(TransactionNotFound):
        layer.send_response(make_response(req, 200), 0.0)
    assert layer.datagrams_to_send() == []


# -- Matching (RFC 3261 §17.2.3) -------------------------------------------------


def test_same_branch_other_sent_by_is_new_transaction():
    driver, _, key = receive()
    other = request(via_host="192.0.2.11")

    driver.receive(other, ("192.0.2.11", 5060))

    (event,) = driver.take_events()
    assert isinstance(event, RequestReceived) and event.key != key
    assert len(driver.layer) == 2


def test_same_branch_other_method_is_new_transaction():
    driver, _, key = receive("INVITE")
    bye = request("BYE")

    driver.receive(bye, UAC)

    (event,) = driver.take_events()
    assert isinstance(event, RequestReceived) and event.key.method == "BYE"


def test_branch_and_sent_by_host_matched_case_insensitively():
    driver, _, key = receive(branch="z9hG4bKCase", via_host="EDGE.example.com")

    driver.receive(request(branch="Z9HG4BKcase", via_host="edge.EXAMPLE.com"), UAC)

    assert driver.take_events() == []
    assert statuses(driver) == [100, 100]


def test_sent_by_default_port_matches_explicit_5060():
    driver, _, key = receive(via_host="edge.example.com")
    text = request(via_host="edge.example.com").to_bytes()
    without_port = text.replace(b"edge.example.com:5060", b"edge.example.com")

    from sbc.sip.parser import parse_message

    driver.receive(parse_message(without_port), UAC)

    assert driver.take_events() == []


def test_rfc2543_request_retransmission_matched():
    driver, req, key = receive(branch=None)

    driver.receive(request(branch=None), UAC)

    assert key.branch is None and key.rfc2543 is not None
    assert driver.take_events() == []
    assert statuses(driver) == [100, 100]


def test_rfc2543_non_cookie_branch_uses_fallback():
    driver, _, key = receive(branch="1234abcd")

    driver.receive(request(branch="1234abcd"), UAC)

    assert key.rfc2543 is not None and driver.take_events() == []


@pytest.mark.parametrize(
    "change",
    [
        {"uri": "sip:+15550199@192.0.2.20"},
        {"from_tag": "f2"},
        {"call_id": "another@192.0.2.10"},
        {"cseq": 2},
        {"via_host": "192.0.2.11"},
    ],
)
def test_rfc2543_any_identity_change_is_new_transaction(change):
    driver, _, key = receive(branch=None)

    driver.receive(request(branch=None, **change), UAC)

    (event,) = driver.take_events()
    assert isinstance(event, RequestReceived) and event.key != key


def test_rfc2543_ack_matched_by_final_response_to_tag():
    driver, req, key = receive(branch=None)
    busy = answer(driver, req, 486, key=key, to_tag="t486")
    stray = request("ACK", branch=None, to_tag="other")

    driver.receive(stray, UAC)
    assert driver.take_events() == [AckReceived(stray, UAC, "UDP", None)]
    driver.receive(request("ACK", branch=None, to_tag=busy.to_tag), UAC)

    assert driver.layer.state(key) is State.CONFIRMED
    assert driver.take_events() == []


def test_rfc2543_reinvite_ack_matched_with_same_to_tag():
    driver, req, key = receive(branch=None, to_tag="dlg1")
    answer(driver, req, 488, key=key)

    driver.receive(request("ACK", branch=None, to_tag="dlg1"), UAC)

    assert driver.layer.state(key) is State.CONFIRMED


def test_rfc2543_response_needs_key():
    driver, req, key = receive(branch=None)

    with pytest.raises(TransactionError):
        driver.layer.send_response(make_response(req, 486, to_tag="x"), driver.now)
    answer(driver, req, 486, key=key)
    assert driver.layer.state(key) is State.COMPLETED


def test_ack_without_transaction_passed_to_tu():
    layer = TransactionLayer()
    ack = request("ACK", to_tag="bb")

    layer.receive_request(ack, UAC, "UDP", 0.0)

    assert layer.next_event() == AckReceived(ack, UAC, "UDP", None)
    assert len(layer) == 0 and layer.datagrams_to_send() == []


def test_ack_in_proceeding_ignored():
    driver, _, key = receive()
    driver.take_sent()

    driver.receive(request("ACK"), UAC)

    assert driver.take_events() == [] and driver.take_sent() == []
    assert driver.layer.state(key) is State.PROCEEDING


def test_merged_request_opens_its_own_transaction():
    # RFC 3261 §8.2.2.2: spotting a merged request (482) is the TU's job.
    driver, _, key = receive()

    driver.receive(request(branch="z9hG4bKotherpath"), ("198.51.100.1", 5060))

    (event,) = driver.take_events()
    assert isinstance(event, RequestReceived) and event.key != key


# -- Where responses go (RFC 3261 §18.2.2, RFC 3581 §4) ----------------------


@pytest.mark.parametrize(
    ("via_host", "via_params", "source", "expected"),
    [
        # C08 (a): rport from the sent-by address, filled in by the transport.
        (
            "192.0.2.20",
            ";received=192.0.2.20;rport=5060",
            ("192.0.2.20", 5060),
            ("192.0.2.20", 5060),
        ),
        # C08 (b): no rport: received address, sent-by port.
        (
            "192.0.2.99",
            ";received=192.0.2.21",
            ("192.0.2.21", 40000),
            ("192.0.2.21", 5060),
        ),
        # C08 (c): rport filled in: received address, rport port.
        (
            "192.0.2.99",
            ";received=192.0.2.21;rport=40000",
            ("192.0.2.21", 40000),
            ("192.0.2.21", 40000),
        ),
        # rport flag the transport left empty: the source port.
        ("192.0.2.99", ";rport", ("192.0.2.21", 40000), ("192.0.2.21", 40000)),
        # No received (sent-by is the source address): sent-by port.
        ("192.0.2.21", "", ("192.0.2.21", 40000), ("192.0.2.21", 5060)),
        # maddr wins over received (§18.2.2).
        (
            "192.0.2.99",
            ";maddr=239.255.255.1;received=192.0.2.21",
            ("192.0.2.21", 40000),
            ("239.255.255.1", 5060),
        ),
        # IPv6 received, bracketed or not (RFC 5118 §4.5).
        (
            "[2001:db8::9:1]",
            ";received=[2001:db8::9:255]",
            ("2001:db8::9:255", 7000),
            ("2001:db8::9:255", 5060),
        ),
    ],
)
def test_c08_response_destination_udp(via_host, via_params, source, expected):
    layer = TransactionLayer()
    req = request("OPTIONS", via_host=via_host, via_params=via_params)
    layer.receive_request(req, source, "UDP", 0.0)
    key = layer.next_event().key

    layer.send_response(make_response(req, 200, to_tag="x"), 0.0, key=key)

    (sent,) = layer.datagrams_to_send()
    assert (sent.destination, sent.transport) == (expected, "UDP")


def test_c08_response_destination_reliable_is_connection_source():
    layer = TransactionLayer()
    req = request("OPTIONS", transport="TCP", via_params=";received=192.0.2.77")
    layer.receive_request(req, ("192.0.2.10", 51234), "TCP", 0.0)
    key = layer.next_event().key

    layer.send_response(make_response(req, 200, to_tag="x"), 0.0, key=key)

    (sent,) = layer.datagrams_to_send()
    assert (sent.destination, sent.transport) == (("192.0.2.10", 51234), "TCP")


@pytest.mark.parametrize(("method", "status"), [("INVITE", 200), ("BYE", 200)])
def test_answered_server_transaction_keeps_no_parsed_request(method, status):
    # Timers L and J keep the transaction 64*T1 after its answer; only the
    # bytes to resend must stay, not the request with its typed headers.
    driver, req, key = receive(method)
    answer(driver, req, status, key=key)

    assert driver.layer.state(key) is not None
    holders = [o for o in gc.get_referrers(req) if type(o).__name__ == "_Transaction"]
    assert holders == []
