"""Classification, admission, normalization, failover and header rules."""

from __future__ import annotations

from b2bua_harness import ANSWER, BACKUP, CALLEE, SBC, Lab, lab_config

from sbc.b2bua import B2bua, B2buaSettings
from sbc.cdr import Disposition


def test_failover_to_next_candidate_on_503():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()

    lab.callee.respond(lab.callee.last("INVITE"), 503)
    lab.run()
    lab.backup.respond(lab.backup.last("INVITE"), 200, body=ANSWER)
    lab.run()

    assert call.final is not None and call.final.status == 200
    first = lab.callee.last("INVITE").request
    second = lab.backup.last("INVITE").request
    assert first.call_id != second.call_id
    assert second.uri.startswith("sip:+15550100@192.0.2.21")
    assert lab.callee.acks == []  # a 503 is ACKed by the transaction layer
    lab.backup.send_in_dialog(lab.backup.dialog(), "BYE")
    lab.run()
    [record] = lab.sbc.records
    assert record.b_trunk == "backup" and record.b_call_id == second.call_id
    lab.assert_clean()


def test_failover_on_timeout_then_480_when_nothing_left():
    lab = Lab()
    lab.drop = lambda wire: wire.destination in (CALLEE, BACKUP)
    call = lab.caller.invite()

    lab.advance(80)

    assert call.final is not None and call.final.status == 480
    sent = [
        w.destination
        for w in lab.wire
        if w.source == SBC and b"INVITE sip:" in w.data[:12]
    ]
    assert CALLEE in sent and BACKUP in sent
    [record] = lab.sbc.records
    assert record.disposition is Disposition.NO_ANSWER
    lab.assert_clean()


def test_non_failover_status_is_relayed_to_the_caller():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()

    lab.callee.respond(
        lab.callee.last("INVITE"), 486, extra=(("Warning", '399 pbx "busy"'),)
    )
    lab.run()

    assert call.final is not None and call.final.status == 486
    assert "Warning" not in call.final.headers  # not on the allow-list
    assert lab.backup.requests == []
    [record] = lab.sbc.records
    assert record.disposition is Disposition.BUSY
    lab.assert_clean()


def test_unknown_source_is_refused_with_403():
    lab = Lab(
        config=lab_config({"carrier": {"inbound": {"allow": ["198.51.100.0/24"]}}})
    )
    call = lab.caller.invite()
    lab.run()

    assert call.final is not None and call.final.status == 403
    assert lab.callee.requests == []
    [record] = lab.sbc.records
    assert record.disposition is Disposition.REJECTED
    lab.assert_clean()


def test_unrouted_number_gets_404():
    lab = Lab()
    call = lab.caller.invite("0044207946000")
    lab.run()

    assert call.final is not None and call.final.status == 404
    lab.assert_clean()


def test_admission_over_max_calls_gets_503_with_retry_after():
    lab = Lab(
        config=lab_config({"carrier": {"limits": {"max_calls": 1, "retry_after": 9}}})
    )
    first = lab.caller.invite()
    second = lab.caller.invite()
    lab.run()

    assert second.final is not None and second.final.status == 503
    assert second.final.headers.get("Retry-After") == "9"
    assert first.final is None
    lab.callee.respond(lab.callee.last("INVITE"), 486)
    lab.run()
    third = lab.caller.invite()
    lab.run()
    assert third.final is None, "the released slot admits the next call"


def test_header_rules_and_allow_list_decide_what_crosses():
    config = lab_config(
        {
            "pbx": {
                "headers": {
                    "egress": [{"action": "add", "name": "X-Trunk", "value": "pbx"}]
                },
                "topology_hiding": {"allow_headers": ["Subject", "X-Account"]},
            }
        }
    )
    lab = Lab(config=config)
    lab.caller.invite(
        extra=(
            ("Subject", "hello"),
            ("X-Account", "42"),
            ("User-Agent", "alice-phone"),
            ("Record-Route", "<sip:proxy.example.com;lr>"),
        )
    )
    lab.run()

    b_invite = lab.callee.last("INVITE").request
    assert b_invite.headers.get("Subject") == "hello"
    assert b_invite.headers.get("X-Account") == "42"
    assert b_invite.headers.get("X-Trunk") == "pbx"
    assert "User-Agent" not in b_invite.headers
    assert "Record-Route" not in b_invite.headers
    assert [via.host for via in b_invite.via] == [SBC[0]]


def test_max_forwards_is_decremented_and_zero_refused():
    lab = Lab()
    lab.caller.invite()
    looping = lab.caller.invite(extra=(("Max-Forwards", "0"),))
    lab.run()

    assert lab.callee.last("INVITE").request.max_forwards == 69
    assert looping.final is not None and looping.final.status == 483
    assert len(lab.callee.requests) == 1


def test_transport_error_fails_over_to_next_candidate():
    lab = Lab()
    lab.drop = lambda wire: wire.destination == CALLEE  # e.g. ICMP unreachable
    call = lab.caller.invite()
    lab.run()

    lab.sbc.layer.report_transport_error(CALLEE, "UDP", lab.now)
    lab.sbc.engine.pump(lab.now)
    lab.run()
    lab.backup.respond(lab.backup.last("INVITE"), 486)
    lab.run()

    assert call.final is not None and call.final.status == 486
    lab.assert_clean()


def test_call_record_holds_numbers_times_and_trunks():
    lab = Lab()
    lab.caller.invite()
    lab.run()
    start = lab.now
    lab.advance(3)
    invite = lab.callee.last("INVITE")
    lab.callee.respond(invite, 200, body=ANSWER)
    lab.run()
    answered = lab.now
    lab.advance(60)
    lab.callee.send_in_dialog(lab.callee.dialog(), "BYE")
    lab.run()

    [record] = lab.sbc.records
    assert (record.start_time, record.answer_time, record.end_time) == (
        start,
        answered,
        answered + 60,
    )
    assert record.duration == 60
    assert (record.calling_received, record.calling_e164, record.calling_sent) == (
        "0015550101",
        "+15550101",
        "0101",
    )
    assert record.b_call_id == invite.request.call_id
    assert record.final_status == 200


def test_candidate_without_local_listener_for_its_transport_is_skipped():
    config = lab_config(
        {
            "pbx": {
                "listeners": ["udp", "tcp"],
                "targets": [{"host": "192.0.2.20", "transport": "tcp"}],
            }
        }
    )
    config = config.model_copy(
        update={
            "listeners": [
                *config.listeners,
                config.listeners[0].model_copy(
                    update={"name": "tcp", "transport": "tcp"}
                ),
            ]
        }
    )
    lab = Lab(config=config)
    udp_only = B2buaSettings(
        tuple(
            e
            for e in B2buaSettings.from_config(config).endpoints
            if e.transport == "UDP"
        )
    )
    lab.sbc.engine = B2bua(lab.sbc.layer, config, udp_only, lab.rng, lab.sbc)
    call = lab.caller.invite()
    lab.run()

    assert lab.callee.requests == []
    lab.backup.respond(lab.backup.last("INVITE"), 486)
    lab.run()
    assert call.final is not None and call.final.status == 486


def test_relayed_failure_keeps_retry_after():
    lab = Lab(config=lab_config({"pbx": {"failover_codes": [408]}}))
    call = lab.caller.invite()
    lab.run()

    lab.callee.respond(lab.callee.last("INVITE"), 503, extra=(("Retry-After", "120"),))
    lab.run()

    assert call.final is not None and call.final.status == 503
    assert call.final.headers.get("Retry-After") == "120"
    assert lab.backup.requests == []


def test_tcp_target_gets_tcp_via_contact_and_request_uri():
    config = lab_config(
        {
            "pbx": {
                "listeners": ["udp", "tcp"],
                "targets": [{"host": "192.0.2.20", "transport": "tcp"}],
            }
        }
    )
    tcp = config.listeners[0].model_copy(update={"name": "tcp", "transport": "tcp"})
    lab = Lab(config=config.model_copy(update={"listeners": [*config.listeners, tcp]}))
    call = lab.caller.invite()
    lab.run()

    b_invite = lab.callee.last("INVITE")
    assert b_invite.transport == "TCP"
    request = b_invite.request
    assert request.top_via.transport == "TCP"
    assert request.uri.endswith(";transport=tcp")
    assert request.headers.get("Contact") == "<sip:192.0.2.1:5060;transport=tcp>"
    lab.callee.respond(b_invite, 200, body=ANSWER)
    lab.run()
    assert call.final is not None and call.final.status == 200
    assert lab.callee.acks and lab.callee.acks[0].top_via.transport == "TCP"
