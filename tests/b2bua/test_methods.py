"""Requests other than the initial INVITE: relayed, answered or refused."""

from __future__ import annotations

import pytest
from b2bua_harness import ANSWER, CALLEE, OFFER, SBC, Lab, answer_call

from sbc.b2bua import ALLOW

HOLD = OFFER.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")


def caller_dialog(call):
    return next(iter(call.dialogs.values()))


def test_options_out_of_dialog_answered_locally():
    lab = Lab()
    call = lab.caller.invite()
    options = lab.caller.resend_as(call, method="OPTIONS", call_id="ping@192.0.2.10")
    lab.run()

    assert options.final is not None and options.final.status == 200
    assert options.final.headers.values("Allow") == list(ALLOW)
    assert options.final.headers.get("Accept") == "application/sdp"
    assert options.final.to_tag is not None
    assert "OPTIONS" not in lab.callee.methods()


def test_options_requiring_an_unknown_extension_gets_420_with_unsupported():
    lab = Lab()
    call = lab.caller.invite()
    call.invite.headers.set("Require", "timer, x-unknown-feature")
    options = lab.caller.resend_as(call, method="OPTIONS", call_id="ping@192.0.2.10")
    lab.run()

    assert options.final is not None and options.final.status == 420
    assert options.final.headers.get("Unsupported") == "x-unknown-feature"
    assert "OPTIONS" not in lab.callee.methods()


@pytest.mark.parametrize("method", ["MESSAGE", "NOTIFY", "SUBSCRIBE", "REGISTER"])
def test_peer_methods_refused_with_405_and_allow(method):
    lab = Lab()
    call = answer_call(lab)
    request = lab.caller.send_in_dialog(caller_dialog(call), method)
    lab.run()

    assert request.final is not None and request.final.status == 405
    allow = request.final.headers.values("Allow")
    assert allow == list(ALLOW) and method not in allow
    assert method not in lab.callee.methods()


def test_refer_refused_with_403():
    lab = Lab()
    call = answer_call(lab)
    refer = lab.caller.send_in_dialog(
        caller_dialog(call), "REFER", extra=(("Refer-To", "<sip:eve@192.0.2.99>"),)
    )
    lab.run()

    assert refer.final is not None and refer.final.status == 403
    assert "REFER" not in lab.callee.methods()


def test_unknown_method_gets_501_with_allow():
    lab = Lab()
    call = answer_call(lab)
    request = lab.caller.send_in_dialog(caller_dialog(call), "FROB")
    lab.run()

    assert request.final is not None and request.final.status == 501
    assert "INVITE" in request.final.headers.values("Allow")


def test_options_in_and_out_of_dialog_answered_by_the_sbc():
    lab = Lab()
    call = answer_call(lab)
    inside = lab.caller.send_in_dialog(caller_dialog(call), "OPTIONS")
    lab.run()

    assert inside.final is not None and inside.final.status == 200
    assert "timer" in inside.final.headers.values("Supported")
    assert "OPTIONS" not in lab.callee.methods()


def test_info_relayed_both_ways():
    lab = Lab()
    call = answer_call(lab)
    info = lab.caller.send_in_dialog(
        caller_dialog(call), "INFO", extra=(("Content-Disposition", "signal"),)
    )
    lab.run()

    assert info.final is not None and info.final.status == 200
    relayed = lab.callee.last("INFO").request
    assert relayed.headers.get("Content-Disposition") == "signal"
    assert relayed.call_id == lab.callee.last("INVITE").request.call_id

    lab.callee.send_in_dialog(lab.callee.dialog(), "INFO")
    lab.run()
    assert lab.caller.methods() == ["INFO"]


def test_reinvite_relayed_and_answered_end_to_end():
    lab = Lab()
    call = answer_call(lab)
    acks_before = len(lab.callee.acks)

    reinvite = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()
    relayed = lab.callee.last("INVITE")
    assert relayed.request.body == HOLD
    assert relayed.request.cseq.number == 2
    lab.callee.respond(relayed, 200, body=ANSWER)
    lab.run()

    assert reinvite.final is not None and reinvite.final.status == 200
    assert reinvite.final.body == ANSWER
    assert len(lab.callee.acks) == acks_before + 1  # the SBC's own ACK
    assert reinvite.acks == 1
    lab.caller.send_in_dialog(caller_dialog(call), "BYE")
    lab.run()
    lab.assert_clean()


def test_reinvite_rejected_by_peer_is_relayed():
    lab = Lab()
    call = answer_call(lab)
    reinvite = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 488)
    lab.run()

    assert reinvite.final is not None and reinvite.final.status == 488
    assert lab.engine.active_calls == 1


def test_update_with_offer_relayed_and_without_body_answered_locally():
    lab = Lab()
    call = answer_call(lab)

    offer = lab.caller.send_in_dialog(caller_dialog(call), "UPDATE", body=HOLD)
    lab.run()
    assert lab.callee.last("UPDATE").request.body == HOLD
    assert offer.final is not None and offer.final.status == 200

    refresh = lab.caller.send_in_dialog(caller_dialog(call), "UPDATE")
    lab.run()
    assert refresh.final is not None and refresh.final.status == 200
    assert lab.callee.methods().count("UPDATE") == 1


def test_early_media_183_with_sdp_passed_through():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 183, body=ANSWER)
    lab.run()

    [early] = [r for r in call.responses if r.status == 183]
    assert early.body == ANSWER
    assert early.headers.get("Content-Type") == "application/sdp"
    assert early.to_tag is not None


def test_merged_request_gets_482():
    lab = Lab()
    first = lab.caller.invite()
    # The same request (Call-ID, From tag, CSeq) again on another branch.
    again = lab.caller.resend_as(first)
    lab.run()

    assert again.final is not None and again.final.status == 482
    assert first.final is None
    assert len([e for e in lab.callee.requests if e.request.method == "INVITE"]) == 1


def test_in_dialog_request_for_unknown_dialog_gets_481():
    lab = Lab()
    call = answer_call(lab)
    dialog = caller_dialog(call)
    lab.caller.send_in_dialog(dialog, "BYE")
    lab.run()

    late = lab.caller.send_in_dialog(dialog, "INFO")
    lab.run()
    assert late.final is not None and late.final.status == 481
    assert lab.requests_between(SBC, CALLEE, "INFO") == []


def test_lower_cseq_in_dialog_gets_500():
    lab = Lab()
    call = answer_call(lab)
    dialog = caller_dialog(call)
    dialog.local_cseq = 10
    lab.caller.send_in_dialog(dialog, "INFO")
    lab.run()
    dialog.local_cseq = 3
    stale = lab.caller.send_in_dialog(dialog, "INFO")
    lab.run()

    assert stale.final is not None and stale.final.status == 500


@pytest.mark.parametrize("method", ["REGISTER", "MESSAGE", "SUBSCRIBE"])
def test_peer_methods_out_of_dialog_refused_with_405(method):
    lab = Lab()
    call = lab.caller.invite()
    request = lab.caller.resend_as(call, method=method, call_id=f"{method}@192.0.2.10")
    lab.run()

    assert request.final is not None and request.final.status == 405
    assert "INVITE" in request.final.headers.values("Allow")
    assert lab.sbc.records == []  # not a call, no call record


def test_bye_out_of_dialog_gets_481():
    lab = Lab()
    call = lab.caller.invite()
    bye = lab.caller.resend_as(call, method="BYE", call_id="nobody@192.0.2.10")
    lab.run()

    assert bye.final is not None and bye.final.status == 481


def test_cancel_of_relayed_reinvite_cancels_the_b_leg_reinvite():
    lab = Lab()
    call = answer_call(lab)
    held = []
    lab.callee.on_request = held.append
    reinvite = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()
    lab.callee.on_request = None
    lab.callee.respond(held[0], 180)
    lab.run()

    lab.caller.cancel(reinvite)
    lab.run()

    assert reinvite.final is not None and reinvite.final.status == 487
    assert len(lab.callee.cancels) == 1
    assert lab.engine.active_calls == 1


def test_strict_router_in_callee_record_route_decides_the_bye():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    invite = lab.callee.last("INVITE")
    lab.callee.respond(
        invite,
        200,
        body=ANSWER,
        extra=(("Record-Route", "<sip:strict.example.com;maddr=192.0.2.20>"),),
    )
    lab.run()

    lab.caller.send_in_dialog(caller_dialog(call), "BYE")
    lab.run()

    [bye] = lab.requests_between(SBC, CALLEE, "BYE")
    assert bye.uri == "sip:strict.example.com;maddr=192.0.2.20"
    assert bye.headers.get_all("Route") == ["<sip:bob@192.0.2.20:5060>"]
    [ack] = lab.callee.acks
    assert ack.uri == "sip:strict.example.com;maddr=192.0.2.20"


def test_loose_router_in_callee_record_route_goes_in_route():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    lab.callee.respond(
        lab.callee.last("INVITE"),
        200,
        body=ANSWER,
        extra=(("Record-Route", "<sip:edge.example.com;lr>"),),
    )
    lab.run()
    lab.caller.send_in_dialog(caller_dialog(call), "BYE")
    lab.run()

    [bye] = lab.requests_between(SBC, CALLEE, "BYE")
    assert bye.uri == "sip:bob@192.0.2.20:5060"
    assert bye.headers.get_all("Route") == ["<sip:edge.example.com;lr>"]
    # The A-leg never learns of the B side's route set.
    assert all("edge.example.com" not in str(r.headers) for r in call.responses)


def test_malformed_response_header_is_discarded_not_fatal():
    lab = Lab()
    call = lab.caller.invite(extra=(("Supported", "100rel"),))
    lab.run()
    invite = lab.callee.last("INVITE")
    lab.callee.respond(invite, 183, extra=(("Require", "100rel"), ("RSeq", "many")))
    lab.run()
    lab.callee.respond(invite, 200, body=ANSWER)
    lab.run()

    assert 183 not in call.statuses
    assert call.final is not None and call.final.status == 200


def test_reinvite_without_offer_defers_the_b_leg_ack_until_the_answer():
    lab = Lab()
    lab.caller.auto_ack = False
    call = answer_call(lab)
    assert call.final is not None
    lab.caller.ack(call, call.final)
    lab.run()
    acks_before = len(lab.callee.acks)

    reinvite = lab.caller.send_in_dialog(caller_dialog(call), "INVITE")
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()
    assert reinvite.final is not None and reinvite.final.body == ANSWER
    assert len(lab.callee.acks) == acks_before  # waits for the answer

    lab.caller.ack(reinvite, reinvite.final, body=HOLD)
    lab.run()
    ack = lab.callee.acks[-1]
    assert len(lab.callee.acks) == acks_before + 1
    assert ack.body == HOLD and ack.cseq.number == 2


def test_early_update_from_callee_relayed_to_caller_early_dialog():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    invite = lab.callee.last("INVITE")
    lab.callee.respond(invite, 183, body=ANSWER)
    lab.run()

    update = lab.callee.send_in_dialog(lab.callee.dialog(), "UPDATE", body=ANSWER)
    lab.run()

    relayed = lab.caller.last("UPDATE").request
    early = next(r for r in call.responses if r.status == 183)
    assert relayed.from_tag == early.to_tag and relayed.call_id == call.invite.call_id
    assert update.final is not None and update.final.status == 200


def test_reliable_1xx_to_relayed_reinvite_pracked_once_and_relayed():
    lab = Lab()
    call = answer_call(lab)
    reinvite = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()
    relayed = lab.callee.last("INVITE")
    reliable = (("Require", "100rel"), ("RSeq", "40"))
    lab.callee.respond(relayed, 183, extra=reliable)
    lab.callee.respond(relayed, 183, extra=reliable)
    lab.run()

    [prack] = lab.requests_between(SBC, CALLEE, "PRACK")
    assert prack.headers.get("RAck") == f"40 {relayed.request.cseq.number} INVITE"
    assert reinvite.statuses.count(183) == 1

    lab.callee.respond(relayed, 200, body=ANSWER)
    lab.run()
    assert reinvite.final is not None and reinvite.final.status == 200


def test_relayed_reinvite_held_at_1xx_is_cancelled_after_64_t1():
    lab = Lab()
    call = answer_call(lab)
    reinvite = lab.caller.send_in_dialog(caller_dialog(call), "INVITE", body=HOLD)
    lab.run()
    lab.callee.on_request = lambda event: None  # a UA that never answers

    lab.advance(33)

    assert len(lab.callee.cancels) == 1
    assert reinvite.final is not None and reinvite.final.status == 487
    assert lab.engine.active_calls == 1
