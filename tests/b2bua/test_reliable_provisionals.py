"""RFC 3262 reliable provisional responses through the B2BUA (case C14)."""

from __future__ import annotations

from b2bua_harness import ANSWER, CALLEE, SBC, Lab

SUPPORT_100REL = (("Supported", "100rel"),)


def reliable(rseq: int) -> tuple[tuple[str, str], ...]:
    return (("Require", "100rel"), ("RSeq", str(rseq)))


def prack_count(lab: Lab) -> int:
    return len(lab.requests_between(SBC, CALLEE, "PRACK"))


def test_c14_reliable_183_pracked_by_sbc_and_relayed_reliably():
    lab = Lab()
    call = lab.caller.invite(extra=SUPPORT_100REL)
    lab.run()
    invite = lab.callee.last("INVITE")

    lab.callee.respond(invite, 183, body=ANSWER, extra=reliable(1001))
    lab.run()

    [prack] = lab.requests_between(SBC, CALLEE, "PRACK")
    assert prack.headers.get("RAck") == f"1001 {invite.request.cseq.number} INVITE"
    [a_183] = [r for r in call.responses if r.status == 183]
    assert "100rel" in a_183.require and a_183.rseq is not None
    caller_pracks = [c for c in lab.caller.calls if c.invite.method == "PRACK"]
    assert caller_pracks and caller_pracks[0].final is not None
    assert caller_pracks[0].final.status == 200


def test_c14_retransmitted_reliable_1xx_not_pracked_nor_relayed_twice():
    lab = Lab()
    call = lab.caller.invite(extra=SUPPORT_100REL)
    lab.run()
    invite = lab.callee.last("INVITE")

    lab.callee.respond(invite, 183, body=ANSWER, extra=reliable(1001))
    lab.callee.respond(invite, 183, body=ANSWER, extra=reliable(1001))
    lab.run()

    assert prack_count(lab) == 1
    assert [r.status for r in call.responses].count(183) == 1

    lab.callee.respond(invite, 180, extra=reliable(1002))
    lab.run()
    assert prack_count(lab) == 2  # the next RSeq continues the sequence
    rseqs = [r.rseq for r in call.responses if r.status in (180, 183)]
    assert rseqs[1] == rseqs[0] + 1


def test_c14_unreliable_1xx_gets_no_prack():
    lab = Lab()
    call = lab.caller.invite(extra=SUPPORT_100REL)
    lab.run()
    invite = lab.callee.last("INVITE")

    lab.callee.respond(invite, 183, body=ANSWER)
    lab.callee.respond(invite, 180)
    lab.run()

    assert prack_count(lab) == 0
    assert all("100rel" not in r.require for r in call.responses)


def test_c14_no_second_reliable_1xx_before_the_first_is_pracked():
    lab = Lab()
    lab.caller.auto_prack = False
    call = lab.caller.invite(extra=SUPPORT_100REL)
    lab.run()
    invite = lab.callee.last("INVITE")

    lab.callee.respond(invite, 183, body=ANSWER, extra=reliable(1))
    lab.callee.respond(invite, 180, extra=reliable(2))
    lab.run()
    assert [r.status for r in call.responses if r.status > 100] == [183]

    # The SBC retransmits the unacknowledged 183 (T1 doubling, RFC 3262 §3).
    lab.advance(1.6)
    assert {r.status for r in call.responses if r.status > 100} == {183}
    resent = [m for m in lab.sent_by(SBC) if getattr(m, "status", 0) == 183]
    assert len(resent) == 3

    first = next(r for r in call.responses if r.status == 183)
    dialog = next(iter(call.dialogs.values()))
    rack = f"{first.rseq} {call.invite.cseq.number} INVITE"
    lab.caller.send_in_dialog(dialog, "PRACK", extra=(("RAck", rack),))
    lab.run()
    statuses = [r.status for r in call.responses if r.status > 100]
    assert statuses[-1] == 180 and set(statuses[:-1]) == {183}


def test_c14_prack_for_unknown_rseq_gets_481():
    lab = Lab()
    lab.caller.auto_prack = False
    call = lab.caller.invite(extra=SUPPORT_100REL)
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 183, body=ANSWER, extra=reliable(5))
    lab.run()

    dialog = next(iter(call.dialogs.values()))
    wrong = lab.caller.send_in_dialog(
        dialog, "PRACK", extra=(("RAck", f"999 {call.invite.cseq.number} INVITE"),)
    )
    lab.run()
    assert wrong.final is not None and wrong.final.status == 481


def test_c14_caller_without_100rel_gets_unreliable_1xx_while_sbc_pracks():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 183, body=ANSWER, extra=reliable(7))
    lab.run()

    assert prack_count(lab) == 1
    [a_183] = [r for r in call.responses if r.status == 183]
    assert a_183.rseq is None and "100rel" not in a_183.require


def test_c14_reliable_1xx_never_pracked_ends_the_call_with_5xx():
    lab = Lab()
    lab.caller.auto_prack = False
    call = lab.caller.invite(extra=(("Require", "100rel"),))
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 180)
    lab.run()

    lab.advance(40)

    assert call.final is not None and 500 <= call.final.status < 600
    assert len(lab.callee.cancels) == 1
    lab.assert_clean()


def test_c14_crlf_line_ends_everywhere():
    lab = Lab()
    lab.caller.invite(extra=SUPPORT_100REL)
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 183, body=ANSWER, extra=reliable(1))
    lab.run()

    for wire in lab.wire:
        if wire.source == SBC:
            head = wire.data.partition(b"\r\n\r\n")[0]
            assert b"\n" not in head.replace(b"\r\n", b"")
