"""Client transactions against RFC 3261 Figures 5 and 6, with RFC 6026."""

from __future__ import annotations

import logging
from itertools import pairwise

import pytest
from transaction_harness import UAS, Driver, request, response_to

from sbc.sip.events import (
    ResponseReceived,
    StrayResponseReceived,
    TransactionTerminated,
    TransactionTimedOut,
    TransportErrorOccurred,
)
from sbc.sip.message import Request
from sbc.sip.timers import Timer, TimerValues
from sbc.sip.transaction import (
    ClientTransactionKey,
    State,
    TransactionError,
    TransactionLayer,
)

# RFC 3261 §17.1.1.2 and §17.1.2.2 with the default T1 = 0.5 s, T2 = 4 s:
# the INVITE goes out 7 times, a non-INVITE 11 times, within 64*T1 = 32 s.
INVITE_UDP_TIMES = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
NON_INVITE_UDP_TIMES = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


def start(method: str = "INVITE", transport: str = "UDP", **kwargs):
    driver = Driver(TransactionLayer(kwargs.pop("timers", TimerValues())))
    req = request(method, transport=transport, **kwargs)
    key = driver.layer.send_request(req, UAS, transport, driver.now)
    driver.collect()
    return driver, req, key


def times_sent(driver: Driver) -> list[float]:
    return [sent.time for sent in driver.take_sent()]


def schedule(t1: float, t2: float | None) -> list[float]:
    """Transmission times per the RFC rule: start at T1, double, cap at t2."""
    times, interval, elapsed = [0.0], t1, 0.0
    while elapsed + interval < 64 * t1:
        elapsed += interval
        times.append(elapsed)
        interval = 2 * interval if t2 is None else min(2 * interval, t2)
    return times


# -- INVITE client: Calling ----------------------------------------------------


def test_invite_retransmits_timer_a_doubling_past_t2_udp():
    driver, _, key = start()

    driver.advance(64 * 0.5 + 1)

    assert times_sent(driver) == INVITE_UDP_TIMES
    intervals = [b - a for a, b in pairwise(INVITE_UDP_TIMES)]
    assert max(intervals) > TimerValues().t2  # Timer A is not capped at T2
    assert driver.take_events() == [
        TransactionTimedOut(key, Timer.B),
        TransactionTerminated(key),
    ]
    assert driver.events == [] and len(driver.layer) == 0


@pytest.mark.parametrize("t1", [0.1, 0.3, 2.0])
def test_invite_retransmits_timer_a_doubling_custom_t1(t1):
    driver, _, key = start(timers=TimerValues(t1=t1, t2=max(4.0, t1)))

    driver.advance(64 * t1 + 1)

    assert times_sent(driver) == pytest.approx(schedule(t1, None))
    timed_out = [e for t, e in driver.events if isinstance(e, TransactionTimedOut)]
    assert timed_out == [TransactionTimedOut(key, Timer.B)]
    assert [t for t, e in driver.events if isinstance(e, TransactionTimedOut)] == [
        pytest.approx(64 * t1)
    ]


def test_invite_retransmissions_are_identical_bytes():
    driver, req, _ = start()

    driver.advance(4.0)

    sent = driver.take_sent()
    assert len({s.transmission.data for s in sent}) == 1
    assert sent[0].transmission.data == req.to_bytes()
    assert {(s.transmission.destination, s.transmission.transport) for s in sent} == {
        (UAS, "UDP")
    }


@pytest.mark.parametrize("transport", ["TCP", "TLS"])
def test_invite_sent_once_timer_b_fires_reliable(transport):
    driver, _, key = start(transport=transport)

    driver.advance(100.0)

    assert times_sent(driver) == [0.0]
    assert driver.events == [
        (32.0, TransactionTimedOut(key, Timer.B)),
        (32.0, TransactionTerminated(key)),
    ]


def test_invite_transport_error_in_calling_terminates():
    driver, _, key = start(transport="TCP")

    driver.layer.report_transport_error(UAS, "tcp", driver.now)
    driver.collect()

    assert driver.take_events() == [
        TransportErrorOccurred(key),
        TransactionTerminated(key),
    ]
    assert driver.layer.next_timer() is None and len(driver.layer) == 0


def test_transport_error_for_other_destination_ignored():
    driver, _, key = start()

    driver.layer.report_transport_error(("192.0.2.99", 5060), "UDP", driver.now)
    driver.collect()

    assert driver.take_events() == []
    assert driver.layer.state(key) is State.CALLING


# -- INVITE client: Proceeding -------------------------------------------------


def test_invite_provisional_stops_retransmissions_and_timer_b():
    driver, req, key = start()
    driver.advance(0.7)
    ringing = response_to(req, 180)

    driver.receive(ringing, UAS)
    driver.advance(200.0)

    assert times_sent(driver) == [0.0, 0.5]
    assert driver.take_events() == [ResponseReceived(ringing, key, UAS)]
    assert driver.layer.state(key) is State.PROCEEDING  # only a final ends it


def test_invite_every_provisional_passed_up():
    driver, req, key = start()
    responses = [response_to(req, status) for status in (100, 180, 180, 183)]

    for response in responses:
        driver.receive(response, UAS)

    assert driver.take_events() == [ResponseReceived(r, key, UAS) for r in responses]


# -- INVITE client: Completed (300-699) ----------------------------------------


def test_invite_failure_acked_and_retransmissions_absorbed_udp():
    driver, req, key = start(routes=("<sip:edge1.example.com;lr>",))
    driver.receive(response_to(req, 180), UAS)
    driver.take_sent(), driver.take_events()
    busy = response_to(req, 486)

    driver.receive(busy, UAS)
    first_ack = driver.take_sent()
    for _ in range(3):
        driver.receive(response_to(req, 486), UAS)
    again = driver.take_sent()

    assert driver.take_events() == [ResponseReceived(busy, key, UAS)]
    assert len(first_ack) == 1 and len(again) == 3
    assert {s.transmission.data for s in again} == {first_ack[0].transmission.data}
    assert first_ack[0].transmission.destination == UAS
    assert driver.layer.state(key) is State.COMPLETED


@pytest.mark.parametrize("one_via_line", [False, True])
def test_invite_ack_for_failure_built_per_rfc3261_17_1_1_3(one_via_line):
    routes = ("<sip:edge1.example.com;lr>", "<sip:edge2;lr>")
    driver, req, _ = start(routes=routes, one_via_line=one_via_line)
    busy = response_to(req, 486, to_tag="busy9")

    driver.receive(busy, UAS)
    ack = driver.take_sent()[-1].message

    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == req.uri
    assert ack.headers.get_all("Via") == [req.headers.values("Via")[0]]
    assert len(ack.via) == 1
    assert ack.top_via.branch == req.top_via.branch
    assert ack.call_id == req.call_id
    assert ack.headers.get("From") == req.headers.get("From")
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.to_tag == "busy9"
    assert (ack.cseq.number, ack.cseq.method) == (req.cseq.number, "ACK")
    assert ack.headers.values("Route") == req.headers.values("Route")
    assert ack.max_forwards is not None and ack.body == b""


def test_invite_timer_d_32s_udp():
    driver, req, key = start()
    driver.advance(0.2)
    driver.receive(response_to(req, 603), UAS)
    driver.take_events()

    driver.advance(0.2 + 31.9)
    assert driver.layer.state(key) is State.COMPLETED
    driver.advance(0.2 + 32.0)

    assert driver.take_events() == [TransactionTerminated(key)]
    assert driver.events == [] and len(driver.layer) == 0


def test_invite_timer_d_configurable_above_32s():
    driver, req, key = start(timers=TimerValues(timer_d=40.0))
    driver.receive(response_to(req, 404), UAS)

    driver.advance(39.0)
    assert driver.layer.state(key) is State.COMPLETED
    driver.advance(40.0)
    assert driver.layer.state(key) is None


@pytest.mark.parametrize("transport", ["TCP", "TLS"])
def test_invite_timer_d_zero_reliable(transport):
    driver, req, key = start(transport=transport)
    busy = response_to(req, 486)

    driver.receive(busy, UAS, transport)

    assert [s.message.method for s in driver.take_sent()[1:]] == ["ACK"]
    assert driver.take_events() == [
        ResponseReceived(busy, key, UAS),
        TransactionTerminated(key),
    ]
    assert driver.layer.next_timer() is None and len(driver.layer) == 0


def test_invite_failure_after_termination_is_stray():
    driver, req, _ = start(transport="TCP")
    driver.receive(response_to(req, 486), UAS, "TCP")
    driver.take_events()
    late = response_to(req, 486)

    driver.receive(late, UAS, "TCP")

    assert driver.take_events() == [StrayResponseReceived(late, UAS, "TCP")]


# -- INVITE client: Accepted (RFC 6026) --------------------------------------


def test_invite_2xx_enters_accepted_without_ack():
    driver, req, key = start()
    ok = response_to(req, 200)

    driver.receive(ok, UAS)

    assert times_sent(driver) == [0.0]  # the ACK for a 2xx is the TU's
    assert driver.take_events() == [ResponseReceived(ok, key, UAS)]
    assert driver.layer.state(key) is State.ACCEPTED


def test_invite_accepted_passes_2xx_retransmissions_and_forks():
    driver, req, key = start()
    first = response_to(req, 200, to_tag="bb")
    retransmitted = response_to(req, 200, to_tag="bb")
    fork = response_to(req, 200, to_tag="cc")

    for response in (first, retransmitted, fork):
        driver.receive(response, UAS)

    assert driver.take_events() == [
        ResponseReceived(first, key, UAS),
        ResponseReceived(retransmitted, key, UAS),
        ResponseReceived(fork, key, UAS),
    ]


def test_invite_accepted_ignores_provisional_and_failure():
    driver, req, key = start()
    driver.receive(response_to(req, 200), UAS)
    driver.take_events()

    driver.receive(response_to(req, 180), UAS)
    driver.receive(response_to(req, 486), UAS)

    assert driver.take_events() == [] and times_sent(driver) == [0.0]
    assert driver.layer.state(key) is State.ACCEPTED


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_invite_timer_m_64_t1_any_transport(transport):
    driver, req, key = start(transport=transport)
    driver.advance(1.0)
    driver.receive(response_to(req, 200), UAS, transport)
    driver.take_events()

    driver.advance(1.0 + 64 * 0.5 - 0.01)
    assert driver.layer.state(key) is State.ACCEPTED
    driver.advance(1.0 + 64 * 0.5)

    assert driver.take_events() == [TransactionTerminated(key)]
    late = response_to(req, 200)
    driver.receive(late, UAS, transport)
    assert driver.take_events() == [StrayResponseReceived(late, UAS, transport)]


# -- Non-INVITE client -----------------------------------------------------------


def test_non_invite_timer_e_doubles_capped_at_t2_udp():
    driver, _, key = start("OPTIONS")

    driver.advance(40.0)

    assert times_sent(driver) == NON_INVITE_UDP_TIMES
    assert driver.take_events() == [
        TransactionTimedOut(key, Timer.F),
        TransactionTerminated(key),
    ]


@pytest.mark.parametrize(("t1", "t2"), [(0.1, 0.4), (0.25, 1.0), (1.0, 8.0)])
def test_non_invite_timer_e_custom_t1_t2(t1, t2):
    driver, _, _ = start("REGISTER", timers=TimerValues(t1=t1, t2=t2))

    driver.advance(64 * t1 + 1)

    assert times_sent(driver) == pytest.approx(schedule(t1, t2))


def test_non_invite_proceeding_retransmits_every_t2():
    driver, req, key = start("BYE")
    driver.advance(0.7)  # retransmitted at 0.5; Timer E now 1 s, due at 1.5
    driver.receive(response_to(req, 100), UAS)

    driver.advance(20.0)

    # E fires at 1.5 as armed, then is reset to T2 in Proceeding (§17.1.2.2).
    assert times_sent(driver) == [0.0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5]
    assert driver.layer.state(key) is State.PROCEEDING


def test_non_invite_timer_f_fires_in_proceeding():
    driver, req, key = start("BYE")
    driver.receive(response_to(req, 100), UAS)

    driver.advance(32.0)

    assert driver.take_events()[-2:] == [
        TransactionTimedOut(key, Timer.F),
        TransactionTerminated(key),
    ]


@pytest.mark.parametrize("status", [200, 202, 302, 404, 500, 603])
def test_non_invite_final_completes_and_timer_k_t4_udp(status):
    driver, req, key = start("OPTIONS")
    final = response_to(req, status)

    driver.receive(final, UAS)
    driver.receive(response_to(req, status), UAS)  # retransmission: absorbed
    driver.advance(4.99)
    assert driver.layer.state(key) is State.COMPLETED
    driver.advance(5.0)

    assert times_sent(driver) == [0.0]
    assert driver.take_events() == [
        ResponseReceived(final, key, UAS),
        TransactionTerminated(key),
    ]


def test_non_invite_timer_k_zero_reliable():
    driver, req, key = start("OPTIONS", transport="TCP")
    final = response_to(req, 200)

    driver.receive(final, UAS, "TCP")

    assert driver.take_events() == [
        ResponseReceived(final, key, UAS),
        TransactionTerminated(key),
    ]
    assert len(driver.layer) == 0 and driver.layer.next_timer() is None


def test_non_invite_sent_once_timer_f_reliable():
    driver, _, key = start("OPTIONS", transport="TCP")

    driver.advance(40.0)

    assert times_sent(driver) == [0.0]
    assert driver.events[0] == (32.0, TransactionTimedOut(key, Timer.F))


def test_non_invite_transport_error_in_proceeding():
    driver, req, key = start("MESSAGE", transport="TCP")
    driver.receive(response_to(req, 100), UAS, "TCP")
    driver.take_events()

    driver.layer.report_transport_error(UAS, "TCP", driver.now)
    driver.collect()

    assert driver.take_events() == [
        TransportErrorOccurred(key),
        TransactionTerminated(key),
    ]


# -- Matching (RFC 3261 §17.1.3) ---------------------------------------------------


def test_response_matched_by_branch_and_cseq_method():
    driver, invite, invite_key = start()
    options = request("OPTIONS", branch="z9hG4bKtx2", call_id="other")
    options_key = driver.layer.send_request(options, UAS, "UDP", driver.now)
    wrong_method = response_to(request("OPTIONS"), 200)  # INVITE's branch

    driver.receive(wrong_method, UAS)
    driver.receive(response_to(options, 200), UAS)

    events = driver.take_events()
    assert isinstance(events[0], StrayResponseReceived)
    assert [type(e) for e in events[1:]] == [ResponseReceived]
    assert events[1].key == options_key != invite_key


def test_response_branch_compared_case_insensitively():
    driver, req, key = start(branch="z9hG4bKMiXeD")
    response = response_to(request(branch="Z9HG4BKmixed"), 180)

    driver.receive(response, UAS)

    assert driver.take_events() == [ResponseReceived(response, key, UAS)]
    assert key == ClientTransactionKey("z9hg4bkmixed", "INVITE")


def test_response_without_branch_is_stray():
    driver, _, _ = start()
    response = response_to(request(branch=None), 200)

    driver.receive(response, UAS)

    assert driver.take_events() == [StrayResponseReceived(response, UAS, "UDP")]


def test_send_request_needs_magic_cookie_branch():
    layer = TransactionLayer()

    with pytest.raises(TransactionError):
        layer.send_request(request(branch="rfc2543"), UAS, "UDP", 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request(branch=None), UAS, "UDP", 0.0)
    assert len(layer) == 0


def test_send_request_refuses_reused_branch_and_ack():
    driver, _, _ = start()

    with pytest.raises(TransactionError):
        driver.layer.send_request(request(), UAS, "UDP", driver.now)
    with pytest.raises(TransactionError):
        driver.layer.send_request(request("ACK", branch="z9hG4bKack"), UAS, "UDP", 0)
    assert len(driver.layer) == 1


def test_send_stateless_ack_opens_no_transaction():
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKack2xx", to_tag="bb")

    layer.send_stateless(ack, UAS, "udp")

    assert layer.datagrams_to_send() == [(ack.to_bytes(), UAS, "UDP")]
    assert len(layer) == 0 and layer.next_timer() is None


def test_timeout_wins_over_retransmission_at_same_instant():
    # With T2 = T1 Timer E fires every T1, so its 64th firing meets Timer F.
    driver, _, key = start("OPTIONS", timers=TimerValues(t1=0.5, t2=0.5))

    driver.advance(40.0)

    assert times_sent(driver) == [0.5 * n for n in range(64)]
    assert driver.events[0] == (32.0, TransactionTimedOut(key, Timer.F))


def test_state_changes_logged_at_debug_with_call_context(caplog):
    caplog.set_level(logging.DEBUG, logger="sbc.sip.transaction")
    driver, req, _ = start()

    driver.receive(response_to(req, 486), UAS)

    (line,) = [r.getMessage() for r in caplog.records]
    assert "call_id=tx-call-1@192.0.2.10" in line and "branch=z9hG4bKtx1" in line
    assert "Calling -> Completed (300-699 from TL)" in line


def test_stopped_timers_do_not_pile_up():
    # Every 200 stops Timer B (32 s away); the heap must not keep them all.
    layer = TransactionLayer()
    for index in range(3000):
        invite = request(branch=f"z9hG4bKpile{index}", call_id=f"pile{index}")
        layer.send_request(invite, UAS, "UDP", 0.0)
        layer.receive_response(response_to(invite, 200), UAS, "UDP", 0.0)

    assert len(layer) == 3000
    assert len(layer._heap) <= 2 * 3000 + 64  # one live Timer M each, plus slack
    layer.handle_timer(64 * 0.5)
    assert len(layer) == 0 and layer.next_timer() is None and not layer._heap
