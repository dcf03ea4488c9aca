"""B2bua.end_call: the SBC itself ends a call, on both legs, with a reason."""

from __future__ import annotations

import re

from b2bua_harness import CALLEE, CALLER, SBC, Lab, answer_call

from sbc.cdr import Disposition, HangupSide
from sbc.sip.message import Request


def reason_text(request: Request) -> str | None:
    # RFC 3326 §2: Reason: protocol *(; reason-params), text a quoted-string.
    value = request.headers.get("Reason")
    match = re.fullmatch(r'SIP\s*;\s*text="([^"\\]*)"', value or "")
    return None if match is None else match.group(1)


def test_end_call_answered_sends_bye_with_reason_on_both_legs():
    lab = Lab()
    answer_call(lab)
    a_call_id = lab.caller.calls[0].invite.call_id

    ended = lab.engine.end_call(a_call_id, "media_timeout", lab.now)
    lab.run()

    assert ended
    [to_caller] = lab.requests_between(SBC, CALLER, "BYE")
    [to_callee] = lab.requests_between(SBC, CALLEE, "BYE")
    assert to_caller.call_id == a_call_id
    assert to_callee.call_id != a_call_id
    assert reason_text(to_caller) == reason_text(to_callee) == "media_timeout"
    assert lab.engine.active_calls == 0
    [record] = lab.sbc.records
    assert record.disposition is Disposition.ANSWERED
    assert record.final_status == 200
    assert record.hangup_side is HangupSide.SBC
    assert record.end_reason == "media_timeout"
    assert record.to_dict()["end_reason"] == "media_timeout"
    lab.assert_clean()


def test_end_call_ringing_cancels_b_leg_and_fails_a_leg():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 180)
    lab.run()

    ended = lab.engine.end_call(call.invite.call_id, "operator", lab.now)
    lab.run()

    assert ended
    assert call.final is not None and call.final.status >= 400
    assert len(lab.callee.cancels) == 1
    b_invite = lab.callee.last("INVITE").request
    statuses = [
        m.status
        for m in lab.sent_by(CALLEE, SBC)
        if not isinstance(m, Request) and m.cseq.method == "INVITE"
    ]
    assert statuses[-1] == 487, statuses
    assert b_invite.call_id != call.invite.call_id
    assert not lab.requests_between(SBC, CALLEE, "BYE")
    [record] = lab.sbc.records
    assert record.disposition is not Disposition.ANSWERED
    assert record.answer_time is None
    assert record.hangup_side is HangupSide.SBC
    assert record.end_reason == "operator"
    lab.assert_clean()


def test_end_call_before_caller_ack_waits_for_it_then_sends_bye():
    lab = Lab()
    lab.caller.auto_ack = False
    call = answer_call(lab)

    lab.engine.end_call(call.invite.call_id, "media_timeout", lab.now)
    lab.run()
    early_byes = lab.requests_between(SBC, CALLER, "BYE")
    assert call.final is not None
    lab.caller.ack(call, call.final)
    lab.run()

    # RFC 3261 §15: no BYE on the A-leg before the ACK of its 2xx.
    assert early_byes == []
    assert len(lab.requests_between(SBC, CALLER, "BYE")) == 1
    assert len(lab.requests_between(SBC, CALLEE, "BYE")) == 1
    [record] = lab.sbc.records
    assert record.end_reason == "media_timeout"
    lab.assert_clean()


def test_end_call_unknown_or_ended_call_is_refused():
    lab = Lab()
    call = answer_call(lab)
    dialog = next(iter(call.dialogs.values()))
    lab.caller.send_in_dialog(dialog, "BYE")
    lab.run()

    assert not lab.engine.end_call("no-such-call@example.invalid", "x", lab.now)
    assert not lab.engine.end_call(call.invite.call_id, "media_timeout", lab.now)
    lab.run()

    [record] = lab.sbc.records
    assert record.hangup_side is HangupSide.CALLER
    assert record.end_reason is None
    assert len(lab.requests_between(SBC, CALLEE, "BYE")) == 1
    lab.assert_clean()


def test_end_call_twice_sends_one_bye_per_leg():
    lab = Lab()
    call = answer_call(lab)

    first = lab.engine.end_call(call.invite.call_id, "media_timeout", lab.now)
    second = lab.engine.end_call(call.invite.call_id, "media_timeout", lab.now)
    lab.run()

    assert first and not second
    assert len(lab.requests_between(SBC, CALLER, "BYE")) == 1
    assert len(lab.requests_between(SBC, CALLEE, "BYE")) == 1
    assert len(lab.sbc.records) == 1
    lab.assert_clean()


def test_end_call_while_hang_up_in_progress_keeps_the_partys_reason():
    lab = Lab()
    lab.caller.auto_ack = False
    call = answer_call(lab)
    callee_bye = lab.callee.send_in_dialog(lab.callee.dialog(), "BYE")
    lab.run()

    # The callee hung up; the caller's BYE waits for its ACK (§15).
    ended = lab.engine.end_call(call.invite.call_id, "media_timeout", lab.now)
    assert call.final is not None
    lab.caller.ack(call, call.final)
    lab.run()

    assert not ended
    assert callee_bye.final is not None and callee_bye.final.status == 200
    [bye] = lab.requests_between(SBC, CALLER, "BYE")
    assert bye.headers.get("Reason") is None
    [record] = lab.sbc.records
    assert record.hangup_side is HangupSide.CALLEE
    assert record.end_reason is None
    lab.assert_clean()
