"""10,000 simulated calls of mixed fates: afterwards every table is empty."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from b2bua_harness import ANSWER, Lab

from sbc.cdr import Disposition

# Scenario by the last digit of the called number.
ANSWER_CALLER_HANGS_UP, BUSY, FAILOVER, CANCELLED, ANSWER_CALLEE_HANGS_UP = range(5)


def scripted_callee(lab, phone, tags):
    hang_up = []

    def on_request(event):
        request = event.request
        if request.method != "INVITE":
            phone.respond(event, 200)
            return
        scenario = int(request.uri.split("@")[0][-1]) % 5
        tag = f"t{next(tags)}"
        if phone is lab.backup or scenario in (
            ANSWER_CALLER_HANGS_UP,
            ANSWER_CALLEE_HANGS_UP,
        ):
            phone.respond(event, 200, body=ANSWER, tag=tag)
            if scenario == ANSWER_CALLEE_HANGS_UP:
                hang_up.append(phone.uas_dialogs[tag])
        elif scenario == BUSY:
            phone.respond(event, 486, tag=tag)
        elif scenario == FAILOVER:
            phone.respond(event, 503, tag=tag)
        else:
            phone.respond(event, 180, tag=tag)

    phone.on_request = on_request
    return hang_up


@pytest.mark.timeout(600)
def test_soak_10000_calls_leave_no_state_behind():
    lab = Lab()
    tags = itertools.count()
    callee_hang_ups = scripted_callee(lab, lab.callee, tags)
    scripted_callee(lab, lab.backup, tags)
    total, batch = 10_000, 250

    for start in range(0, total, batch):
        calls = [
            lab.caller.invite(f"001555010{n % 10}") for n in range(start, start + batch)
        ]
        lab.run()
        for call in calls:
            final = call.final
            if final is None:
                lab.caller.cancel(call)
            elif final.status == 200 and call.invite.uri.split("@")[0][-1] in "0527":
                lab.caller.send_in_dialog(next(iter(call.dialogs.values())), "BYE")
        for dialog in callee_hang_ups:
            lab.callee.send_in_dialog(dialog, "BYE")
        callee_hang_ups.clear()
        lab.run()
        assert lab.engine.active_calls == 0
        lab.advance(33)
        for phone in (lab.caller, lab.callee, lab.backup):
            phone.calls.clear()
            phone.by_key.clear()
            phone.requests.clear()
            phone.acks.clear()
            phone.cancels.clear()
            phone.uas_dialogs.clear()
        lab.wire.clear()

    lab.assert_clean()
    records = lab.sbc.records
    assert len(records) == total
    fates = Counter(record.disposition for record in records)
    assert fates == {
        Disposition.ANSWERED: total * 3 // 5,
        Disposition.BUSY: total // 5,
        Disposition.CANCELLED: total // 5,
    }
