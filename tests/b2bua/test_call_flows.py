"""Basic call flows through the B2BUA, three real transaction layers."""

from __future__ import annotations

from b2bua_harness import ANSWER, CALLEE, CALLER, OFFER, SBC, Lab, answer_call

from sbc.b2bua import Side
from sbc.cdr import Disposition, HangupSide
from sbc.sip.errors import SipError
from sbc.sip.message import make_response


def test_call_answered_then_caller_hangs_up():
    lab = Lab()

    call = answer_call(lab)

    assert call.statuses[-2:] == [180, 200]
    assert call.final is not None and call.final.body == ANSWER
    b_invite = lab.callee.last("INVITE").request
    assert b_invite.body == OFFER
    assert lab.callee.acks, "the SBC ACKs the callee's 2xx itself"
    assert lab.engine.active_calls == 1

    dialog = next(iter(call.dialogs.values()))
    bye = lab.caller.send_in_dialog(dialog, "BYE")
    lab.run()

    assert bye.final is not None and bye.final.status == 200
    assert lab.callee.methods()[-1] == "BYE"
    assert lab.engine.active_calls == 0
    [record] = lab.sbc.records
    assert record.disposition is Disposition.ANSWERED
    assert record.hangup_side is HangupSide.CALLER
    assert record.called_received == "0015550100"
    assert record.called_e164 == "+15550100"
    assert record.called_sent == "0100"
    assert record.a_trunk == "carrier" and record.b_trunk == "pbx"
    lab.assert_clean()


def test_call_answered_then_callee_hangs_up():
    lab = Lab()
    answer_call(lab)

    lab.callee.send_in_dialog(lab.callee.dialog(), "BYE")
    lab.run()

    assert lab.caller.methods() == ["BYE"]
    [record] = lab.sbc.records
    assert record.hangup_side is HangupSide.CALLEE
    lab.assert_clean()


def test_b_leg_shares_no_identity_with_a_leg():
    lab = Lab()
    call = answer_call(lab)

    a_invite = call.invite
    b_invite = lab.callee.last("INVITE").request
    assert b_invite.call_id != a_invite.call_id
    assert b_invite.from_tag != a_invite.from_tag
    # Bodies are the SDP rewriter's business: only the headers are checked.
    b_text = b_invite.to_bytes().partition(b"\r\n\r\n")[0]
    for secret in (a_invite.call_id, a_invite.from_tag or "", CALLER[0]):
        assert secret.encode() not in b_text
    a_text = b"".join(
        m.to_bytes().partition(b"\r\n\r\n")[0] for m in lab.sent_by(SBC, CALLER)
    )
    for secret in (b_invite.call_id, CALLEE[0], "bob-t"):
        assert secret.encode() not in a_text


def test_crossing_byes_both_get_200():
    lab = Lab()
    call = answer_call(lab)

    from_caller = lab.caller.send_in_dialog(next(iter(call.dialogs.values())), "BYE")
    from_callee = lab.callee.send_in_dialog(lab.callee.dialog(), "BYE")
    lab.run()

    assert from_caller.final is not None and from_caller.final.status == 200
    assert from_callee.final is not None and from_callee.final.status == 200
    assert len(lab.sbc.records) == 1
    lab.assert_clean()


def test_provisional_without_to_tag_still_relayed_as_progress():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    invite = lab.callee.last("INVITE")
    untagged = make_response(invite.request, 180)
    lab.callee.layer.send_response(untagged, lab.now, key=invite.key)
    lab.run()

    [ringing] = [r for r in call.responses if r.status == 180]
    assert ringing.to_tag is not None  # the A-leg's own early dialog


class RefusingBodies:
    """A body hook that refuses every offer, as the SDP rewriter may."""

    def __init__(self):
        self.released = []

    def rewrite(self, call_id, source, body, content_type):
        raise SipError("Not Acceptable Here", status_code=488)

    def release(self, call_id):
        self.released.append(call_id)


def test_offer_refused_by_body_hook_ends_the_call_with_its_status():
    bodies = RefusingBodies()
    lab = Lab(bodies=bodies)
    call = lab.caller.invite()
    lab.run()

    assert call.final is not None and call.final.status == 488
    assert lab.callee.requests == []
    assert bodies.released == [call.invite.call_id]
    [record] = lab.sbc.records
    assert record.final_status == 488
    lab.assert_clean()


class AnswerRefusingBodies(RefusingBodies):
    """Passes offers, refuses answers, as the media anchor refuses one that
    keeps no codec of the offer."""

    def rewrite(self, call_id, source, body, content_type):
        if source is Side.B:
            raise SipError("the answer keeps no codec of the offer", status_code=488)
        return body


def test_answer_refused_by_body_hook_byes_the_callee_and_refuses_the_caller():
    bodies = AnswerRefusingBodies()
    lab = Lab(bodies=bodies)
    call = answer_call(lab)

    assert call.final is not None and call.final.status == 488
    assert [r.request.method for r in lab.callee.requests] == ["INVITE", "BYE"]
    assert [ack.method for ack in lab.callee.acks] == ["ACK"]
    [record] = lab.sbc.records
    assert (record.final_status, record.hangup_side) == (488, HangupSide.SBC)
    assert record.end_reason == "answer refused: the answer keeps no codec of the offer"
    assert bodies.released == [call.invite.call_id]
    lab.assert_clean()


def test_body_hook_sees_each_crossing_body_with_its_source_leg():
    class Recording:
        def __init__(self):
            self.seen = []

        def rewrite(self, call_id, source, body, content_type):
            self.seen.append((source, content_type))
            return body.replace(b"192.0.2.", b"198.51.100.")

        def release(self, call_id):
            self.seen.append(("released", call_id))

    bodies = Recording()
    lab = Lab(bodies=bodies)
    call = answer_call(lab)

    assert bodies.seen == [(Side.A, "application/sdp"), (Side.B, "application/sdp")]
    assert b"192.0.2." not in lab.callee.last("INVITE").request.body
    assert call.final is not None and b"192.0.2." not in call.final.body
