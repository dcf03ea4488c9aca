"""Random interleavings of caller, callee and clock: no crash, no leak."""

from __future__ import annotations

from b2bua_harness import ANSWER, CALLEE, CALLER, OFFER, Lab
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from sbc.sip.transaction import State, TransactionError

ACTIONS = st.sampled_from(
    [
        "ring",
        "ring_reliable",
        "answer",
        "busy",
        "cancel",
        "bye_caller",
        "bye_callee",
        "reinvite_caller",
        "reinvite_callee",
        "answer_reinvite",
        "update_caller",
        "info_callee",
        "wait",
        "long_wait",
        "session_wait",
        "lose_callee",
        "lose_caller",
        "heal",
    ]
)


def pending_invites(phone):
    return [
        event
        for event in phone.requests
        if event.request.method == "INVITE"
        and phone.layer.state(event.key) in (State.PROCEEDING, State.TRYING)
    ]


def confirmed(dialogs):
    return [d for d in dialogs if d.state.value == "Confirmed"]


def act(lab, call, action, serial):
    caller, callee = lab.caller, lab.callee
    initial = [e for e in pending_invites(callee) if e.request.to_tag is None]
    in_dialog = [e for e in pending_invites(callee) if e.request.to_tag is not None]
    caller_dialogs = confirmed(call.dialogs.values())
    callee_dialogs = confirmed(callee.uas_dialogs.values())
    if action == "ring" and initial:
        callee.respond(initial[-1], 180, tag="cb")
    elif action == "ring_reliable" and initial:
        extra = (("Require", "100rel"), ("RSeq", str(serial)))
        callee.respond(initial[-1], 183, tag="cb", body=ANSWER, extra=extra)
    elif action == "answer" and initial:
        callee.respond(initial[-1], 200, tag="cb", body=ANSWER)
    elif action == "busy" and initial:
        callee.respond(initial[-1], 486, tag="cb")
    elif action == "cancel":
        caller.cancel(call)
    elif action == "bye_caller" and caller_dialogs:
        caller.send_in_dialog(caller_dialogs[0], "BYE")
    elif action == "bye_callee" and callee_dialogs:
        callee.send_in_dialog(callee_dialogs[0], "BYE")
    elif action == "reinvite_caller" and caller_dialogs:
        caller.send_in_dialog(caller_dialogs[0], "INVITE", body=OFFER)
    elif action == "reinvite_callee" and callee_dialogs:
        callee.send_in_dialog(callee_dialogs[0], "INVITE", body=ANSWER)
    elif action == "answer_reinvite" and in_dialog:
        callee.respond(in_dialog[-1], 200, body=ANSWER)
    elif action == "update_caller" and caller_dialogs:
        caller.send_in_dialog(caller_dialogs[0], "UPDATE", body=OFFER)
    elif action == "info_callee" and callee_dialogs:
        callee.send_in_dialog(callee_dialogs[0], "INFO")
    elif action == "wait":
        lab.advance(0.7)
    elif action == "long_wait":
        lab.advance(35)
    elif action == "session_wait":
        lab.advance(950)  # past half of the default 1800 s session interval
    elif action == "lose_callee":
        lab.drop = lambda wire: CALLEE in (wire.source, wire.destination)
    elif action == "lose_caller":
        lab.drop = lambda wire: CALLER in (wire.source, wire.destination)
    elif action == "heal":
        lab.drop = None


def wind_down(lab, call):
    lab.drop = None
    for phone in (lab.caller, lab.callee, lab.backup):
        phone.on_request = None
        for event in pending_invites(phone):
            try:
                phone.respond(event, 487)
            except TransactionError:
                pass
    lab.run()
    if call.final is None:
        lab.caller.cancel(call)  # a caller that lost touch gives up too
    lab.advance(40)  # resent 2xx arrive now that the network healed
    for dialog in confirmed(call.dialogs.values()):
        lab.caller.send_in_dialog(dialog, "BYE")
    lab.run()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(ACTIONS, min_size=1, max_size=14), st.integers(0, 2**16))
def test_any_interleaving_ends_clean(actions, seed):
    lab = Lab(seed=seed)
    lab.callee.layer.send_trying = seed % 2 == 0
    call = lab.caller.invite(extra=(("Supported", "100rel, timer"),))
    lab.run()

    for serial, action in enumerate(actions, start=1):
        try:
            act(lab, call, action, serial)
        except TransactionError:
            pass  # the phone's own transaction had ended: a no-op step
        lab.run()

    wind_down(lab, call)
    lab.assert_clean()
    assert lab.engine.active_calls == 0
    [record] = lab.sbc.records
    hypothesis_event(f"{record.disposition.value} {record.final_status}")
