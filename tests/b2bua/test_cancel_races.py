"""CANCEL, crossing responses and forks (cases C11 and C12)."""

from __future__ import annotations

from b2bua_harness import ANSWER, CALLEE, SBC, Lab, answer_call

from sbc.cdr import Disposition, HangupSide


def test_cancel_relayed_to_b_leg_then_487_to_a_leg():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 180)
    lab.run()

    lab.caller.cancel(call)
    lab.run()

    assert call.final is not None and call.final.status == 487
    assert len(lab.callee.cancels) == 1
    assert lab.engine.active_calls == 0
    [record] = lab.sbc.records
    assert record.disposition is Disposition.CANCELLED
    assert record.hangup_side is HangupSide.CALLER
    lab.assert_clean()


def test_cancel_before_any_provisional_waits_for_the_b_leg_1xx():
    lab = Lab()
    lab.callee.layer.send_trying = False
    call = lab.caller.invite()
    lab.run()

    lab.caller.cancel(call)
    lab.run()
    assert call.final is not None and call.final.status == 487
    assert lab.callee.cancels == []  # RFC 3261 §9.1: not before a 1xx

    lab.callee.respond(lab.callee.last("INVITE"), 180)
    lab.run()
    assert len(lab.callee.cancels) == 1
    lab.assert_clean()


def test_c11_cancel_crossing_200_is_acked_then_byed():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    invite = lab.callee.last("INVITE")
    lab.callee.respond(invite, 180)
    lab.run()
    # The callee answers before the CANCEL reaches it: the CANCEL finds
    # a completed transaction and the 200 crosses it.
    lab.callee.respond(invite, 200, body=ANSWER)

    lab.caller.cancel(call)
    lab.run()

    assert call.statuses.count(487) == 1 and 200 not in call.statuses
    assert len(lab.callee.acks) == 1
    assert lab.callee.methods().count("BYE") == 1
    assert lab.engine.active_calls == 0
    [record] = lab.sbc.records
    assert record.disposition is Disposition.CANCELLED
    lab.assert_clean()


def test_c11_cancel_after_2xx_then_bye_before_ack_is_honoured():
    lab = Lab()
    lab.caller.auto_ack = False
    call = answer_call(lab)
    assert call.final is not None and call.final.status == 200

    lab.caller.cancel(call)  # after a final response: no effect (§9.1)
    dialog = next(iter(call.dialogs.values()))
    bye = lab.caller.send_in_dialog(dialog, "BYE")
    lab.run()

    assert bye.final is not None and bye.final.status == 200
    assert lab.callee.methods().count("BYE") == 1
    retransmitted = [m for m in lab.sent_by(SBC) if getattr(m, "status", 0) == 200]
    lab.advance(10)
    again = [m for m in lab.sent_by(SBC) if getattr(m, "status", 0) == 200]
    assert len(again) == len(retransmitted), "the 2xx stops after the BYE"
    lab.assert_clean()


def test_2xx_retransmitted_until_ack_then_bye_when_never_acked():
    lab = Lab()
    lab.caller.auto_ack = False
    call = answer_call(lab)

    lab.advance(40)

    invite_2xx = [
        m
        for m in lab.sent_by(SBC)
        if getattr(m, "status", 0) == 200 and m.cseq.method == "INVITE"
    ]
    # T1 doubling to T2 for 64*T1 = 32 s: 0, .5, 1.5, 3.5, 7.5, 11.5 ... 31.5.
    assert 9 <= len(invite_2xx) <= 12
    assert lab.callee.methods().count("BYE") == 1
    assert lab.caller.methods().count("BYE") == 1
    [record] = lab.sbc.records
    assert record.hangup_side is HangupSide.SBC
    assert call.final is not None
    lab.assert_clean()


def test_c12_to_tag_change_uses_the_2xx_tag_and_contact():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    invite = lab.callee.last("INVITE")
    lab.callee.respond(invite, 180, tag="aa", contact="<sip:ua@192.0.2.34>")
    lab.callee.respond(
        invite, 200, tag="bb", contact="<sip:ua@192.0.2.35>", body=ANSWER
    )
    lab.run()

    [ack] = lab.callee.acks
    assert ack.to_tag == "bb" and ack.uri == "sip:ua@192.0.2.35"
    assert call.statuses.count(200) == 1

    dialog = next(iter(call.dialogs.values()))
    lab.caller.send_in_dialog(dialog, "BYE")
    lab.run()
    bye = lab.callee.last("BYE").request
    assert bye.to_tag == "bb" and bye.uri == "sip:ua@192.0.2.35"
    lab.assert_clean()


def test_c12_two_forked_2xx_one_kept_other_acked_and_byed():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    invite = lab.callee.last("INVITE")
    lab.callee.respond(invite, 200, tag="bb", body=ANSWER)
    lab.callee.respond(invite, 200, tag="cc", body=ANSWER)
    lab.run()

    assert sorted(ack.to_tag for ack in lab.callee.acks) == ["bb", "cc"]
    byes = [e.request for e in lab.callee.requests if e.request.method == "BYE"]
    assert [bye.to_tag for bye in byes] == ["cc"]
    assert call.statuses.count(200) == 1
    assert lab.engine.active_calls == 1

    lab.callee.send_in_dialog(lab.callee.uas_dialogs["bb"], "BYE")
    lab.run()
    assert lab.caller.methods() == ["BYE"]
    lab.assert_clean()


def test_retransmitted_2xx_is_acked_again_with_the_same_ack():
    lab = Lab()
    answer_call(lab)
    invite = lab.callee.last("INVITE")

    lab.callee.respond(invite, 200, body=ANSWER)  # the callee's own resend
    lab.run()

    assert len(lab.callee.acks) == 2
    assert lab.callee.acks[0].to_bytes() == lab.callee.acks[1].to_bytes()
    assert lab.requests_between(SBC, CALLEE, "BYE") == []


def test_c12_fork_2xx_after_the_call_ended_is_acked_and_byed():
    # The finished call's INVITEs have dropped their typed headers while
    # they wait out 64*T1; a late fork's 2xx makes the engine read them again.
    lab = Lab()
    call = answer_call(lab)
    invite = lab.callee.last("INVITE")
    lab.caller.send_in_dialog(next(iter(call.dialogs.values())), "BYE")
    lab.run()
    assert lab.engine.active_calls == 0

    lab.callee.respond(invite, 200, tag="late", body=ANSWER)
    lab.run()

    assert [ack.to_tag for ack in lab.callee.acks][-1] == "late"
    byes = [e.request for e in lab.callee.requests if e.request.method == "BYE"]
    assert byes[-1].to_tag == "late"
    assert byes[-1].call_id == invite.request.call_id
    assert lab.caller.methods() == []
    lab.assert_clean()
