"""RFC 4028 session timers, each leg on its own (case C15)."""

from __future__ import annotations

from b2bua_harness import ANSWER, CALLEE, CALLER, SBC, Lab

from sbc.b2bua import SessionTimerPolicy
from sbc.cdr import HangupSide

TIMER_90 = (("Supported", "timer"), ("Session-Expires", "90"))


def invites_to(lab, destination):
    return [
        w
        for w in lab.wire
        if w.source == SBC
        and w.destination == destination
        and w.data.startswith(b"INVITE ")
    ]


def test_c15a_2xx_carries_refresher_and_require_timer():
    lab = Lab()
    call = lab.caller.invite(extra=TIMER_90)
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()

    assert call.final is not None
    expires = call.final.session_expires
    assert expires is not None and expires.delta == 90 and expires.refresher == "uac"
    assert "timer" in call.final.require


def test_c15a_caller_without_timer_support_makes_the_sbc_refresher():
    lab = Lab()
    call = lab.caller.invite(extra=(("Session-Expires", "300"),))
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()

    assert call.final is not None
    expires = call.final.session_expires
    assert expires is not None and expires.refresher == "uas"
    assert "timer" not in call.final.require


def test_c15b_interval_below_min_se_gets_422():
    lab = Lab()
    call = lab.caller.invite(extra=(("Supported", "timer"), ("Session-Expires", "60")))
    lab.run()

    assert call.final is not None and call.final.status == 422
    assert call.final.min_se == 90
    assert lab.callee.requests == []


def test_c15c_422_from_callee_retried_with_its_min_se():
    lab = Lab(policy=SessionTimerPolicy(session_expires=90, min_se=90))
    call = lab.caller.invite()
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 422, extra=(("Min-SE", "120"),))
    lab.run()

    retry = lab.callee.last("INVITE").request
    assert retry.session_expires is not None and retry.session_expires.delta == 120
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()
    assert call.final is not None and call.final.status == 200


def test_c15d_refresh_answered_422_retried_with_larger_interval():
    lab = Lab(policy=SessionTimerPolicy(session_expires=100, min_se=90))
    lab.caller.invite()
    lab.run()
    lab.callee.respond(
        lab.callee.last("INVITE"),
        200,
        body=ANSWER,
        extra=(("Session-Expires", "100;refresher=uac"),),
    )
    lab.run()
    answers = iter([422, 200])

    def refresh(event):
        status = next(answers)
        extra = (("Min-SE", "150"),) if status == 422 else ()
        lab.callee.respond(
            event, status, body=ANSWER if status == 200 else b"", extra=extra
        )

    lab.callee.on_request = refresh
    lab.advance(55)

    refreshes = invites_to(lab, CALLEE)[1:]
    assert len(refreshes) == 2
    second = refreshes[1].message
    assert second.session_expires is not None and second.session_expires.delta == 150
    assert second.session_expires.refresher == "uac"  # C15e: refreshes name it
    assert lab.engine.active_calls == 1


def test_c15e_refresh_from_caller_answered_locally_with_refresher():
    lab = Lab()
    call = lab.caller.invite(extra=TIMER_90)
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()

    dialog = next(iter(call.dialogs.values()))
    refresh = lab.caller.send_in_dialog(
        dialog,
        "UPDATE",
        extra=(("Supported", "timer"), ("Session-Expires", "90;refresher=uac")),
    )
    lab.run()

    assert refresh.final is not None and refresh.final.status == 200
    expires = refresh.final.session_expires
    assert expires is not None and expires.refresher == "uac"
    assert "UPDATE" not in lab.callee.methods()  # legs refresh on their own


def test_c15_caller_never_refreshing_ends_the_call_on_both_legs():
    lab = Lab()
    lab.caller.invite(extra=TIMER_90)
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()
    start = lab.now

    lab.advance(70)

    # §10: BYE at 90 - min(32, 90/3) = 60 s without a refresh.
    bye_times = [
        w.at for w in lab.wire if w.source == SBC and w.data.startswith(b"BYE ")
    ]
    assert len(bye_times) == 2 and all(t - start == 60 for t in bye_times)
    assert (
        lab.callee.methods().count("BYE") == 1
        and lab.caller.methods().count("BYE") == 1
    )
    [record] = lab.sbc.records
    assert record.hangup_side is HangupSide.SBC
    lab.assert_clean()


def test_c15f_refresh_without_response_sends_bye_on_both_legs():
    lab = Lab(policy=SessionTimerPolicy(session_expires=120, min_se=90))
    lab.caller.invite()
    lab.run()
    lab.callee.respond(
        lab.callee.last("INVITE"),
        200,
        body=ANSWER,
        extra=(("Session-Expires", "120;refresher=uac"),),
    )
    lab.run()

    def ignore_invites(event):
        if event.request.method != "INVITE":  # never answers the refresh
            lab.callee.respond(event, 200)

    lab.callee.on_request = ignore_invites

    lab.advance(100)

    assert len(invites_to(lab, CALLEE)) >= 2  # initial and refresh at 60 s
    assert lab.caller.methods().count("BYE") == 1
    assert lab.requests_between(SBC, CALLEE, "BYE")
    lab.assert_clean()


def test_session_timers_run_independently_per_leg():
    lab = Lab()
    call = lab.caller.invite(extra=TIMER_90)
    lab.run()
    b_invite = lab.callee.last("INVITE").request
    lab.callee.respond(
        lab.callee.last("INVITE"),
        200,
        body=ANSWER,
        extra=(("Session-Expires", "1800;refresher=uas"),),
    )
    lab.run()

    assert (
        b_invite.session_expires is not None and b_invite.session_expires.delta == 1800
    )
    assert call.final is not None and call.final.session_expires.delta == 90
    dialog = next(iter(call.dialogs.values()))
    for _ in range(5):
        lab.caller.send_in_dialog(dialog, "UPDATE", extra=TIMER_90)
        lab.advance(40)
    assert lab.engine.active_calls == 1
    assert not any(
        w.destination == CALLER and w.data.startswith(b"BYE ") for w in lab.wire
    )
