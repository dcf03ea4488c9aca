"""Offer/answer glare and overlapping INVITEs (case C10, RFC 3261 §14)."""

from __future__ import annotations

import random

from b2bua_harness import ANSWER, CALLEE, OFFER, SBC, Lab, answer_call

from sbc.b2bua import glare_retry_delay

HOLD = OFFER.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")


def caller_dialog(call):
    return next(iter(call.dialogs.values()))


def hold_requests_at(phone):
    held = []
    phone.on_request = held.append
    return held


def test_c10a_reinvite_while_relayed_update_pending_gets_491():
    lab = Lab()
    call = answer_call(lab)
    held = hold_requests_at(lab.caller)
    lab.callee.send_in_dialog(lab.callee.dialog(), "UPDATE", body=ANSWER)
    lab.run()
    assert [e.request.method for e in held] == ["UPDATE"]

    glare = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()
    assert glare.final is not None and glare.final.status == 491
    assert lab.requests_between(SBC, CALLEE, "INVITE") == [
        lab.callee.last("INVITE").request
    ]

    # c: once the UPDATE is answered the retry goes through.
    lab.caller.respond(held[0], 200, body=OFFER)
    lab.run()
    lab.caller.on_request = None
    retry = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()
    assert retry.final is not None and retry.final.status == 200


def test_c10b_both_sides_hold_at_once_both_get_491():
    lab = Lab()
    call = answer_call(lab)
    # The callee answers an INVITE that crosses its own with 491 (§14.2).
    lab.callee.on_request = lambda event: lab.callee.respond(event, 491)

    from_caller = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    from_callee = lab.callee.send_in_dialog(lab.callee.dialog(), "INVITE", body=HOLD)
    lab.run()

    assert from_caller.final is not None and from_caller.final.status == 491
    assert from_callee.final is not None and from_callee.final.status == 491
    assert lab.engine.active_calls == 1


def test_c10d_second_invite_while_first_unanswered_gets_500_retry_after():
    lab = Lab()
    call = answer_call(lab)
    first = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()
    second = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=OFFER)
    lab.run()

    assert first.final is None
    assert second.final is not None and second.final.status == 500
    retry_after = int(second.final.headers.get("Retry-After") or "-1")
    assert 0 <= retry_after <= 10


def test_c10e_reinvite_before_ack_accepted_when_offer_answer_complete():
    lab = Lab()
    lab.caller.auto_ack = False
    call = answer_call(lab)

    reinvite = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()

    assert reinvite.final is None  # relayed, not refused
    assert lab.callee.last("INVITE").request.body == HOLD


def test_c10e_reinvite_before_ack_refused_while_answer_due_in_ack():
    lab = Lab()
    lab.caller.auto_ack = False
    call = lab.caller.invite(body=b"")
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()
    assert call.final is not None and call.final.body == ANSWER  # the offer

    reinvite = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()
    assert reinvite.final is not None and reinvite.final.status == 491


def test_delayed_offer_answer_in_ack_reaches_the_b_leg_ack():
    lab = Lab()
    lab.caller.auto_ack = False
    call = lab.caller.invite(body=b"")
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()
    assert lab.callee.acks == []  # the B-leg ACK waits for the answer

    assert call.final is not None
    lab.caller.ack(call, call.final, body=OFFER)
    lab.run()

    [ack] = lab.callee.acks
    assert ack.body == OFFER


def test_glare_retry_delay_ranges_follow_call_id_ownership():
    rng = random.Random(3)
    owner = [glare_retry_delay(True, rng) for _ in range(2000)]
    other = [glare_retry_delay(False, rng) for _ in range(2000)]

    assert 2.1 <= min(owner) and max(owner) <= 4.0
    assert 0.0 <= min(other) and max(other) <= 2.0
    # The draws spread over their ranges rather than sit at one value.
    assert max(owner) - min(owner) > 1.5 and max(other) - min(other) > 1.5


def test_sbc_refresh_answered_491_retried_after_owner_delay():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    invite = lab.callee.last("INVITE")
    lab.callee.respond(
        invite, 200, body=ANSWER, extra=(("Session-Expires", "120;refresher=uac"),)
    )
    lab.run()
    glared = []

    def refuse_once(event):
        if not glared:
            glared.append(lab.now)
            lab.callee.respond(event, 491)
        else:
            lab.callee.respond(event, 200, body=ANSWER)

    lab.callee.on_request = refuse_once
    lab.advance(70)

    refreshes = [
        w
        for w in lab.wire
        if w.source == SBC and w.destination == CALLEE and w.data.startswith(b"INVITE ")
    ]
    first_refresh, retry = refreshes[1].at, refreshes[2].at
    assert 2.1 <= retry - first_refresh <= 4.0  # the SBC owns the B-leg Call-ID
    assert call.final is not None
