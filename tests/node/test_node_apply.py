"""Node.apply changes the running engines live; SIPp calls are the witness.

A call placed by a real SIPp UAC through the node to a SIPp UAS must finish
as if nothing happened while trunks are added, changed and deleted beside
it; a configuration that cannot run changes nothing at all.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess

import pytest
from node_harness import (
    HOST,
    Lab,
    Records,
    config_of,
    finish_sipp,
    free_port,
    invite_status,
    new_node,
    request_status,
    start_call,
    wait_until,
)
from peer_tools import require_tool

from sbc.cdr import Disposition, HangupSide
from sbc.io.settings import ListenSpec
from sbc.node import Outcome
from sbc.node_views import CallEnded, CallStarted, TrunkMode, TrunkStateChanged

pytestmark = pytest.mark.timeout(120)


def spare_trunk(name: str, port: int, max_calls: int | None = None) -> dict:
    return {
        "name": name,
        "kind": "carrier",
        "listeners": ["lo"],
        "targets": [{"host": HOST, "port": port}],
        "limits": {"max_calls": max_calls},
    }


def test_apply_live_adds_changes_and_deletes_trunks_while_a_call_continues(tmp_path):
    sipp = require_tool("sipp", "sip-tester")
    lab = Lab()
    first = lab.document()
    first["trunks"] += [spare_trunk("changed", 5999), spare_trunk("removed", 5998)]
    records = Records()

    async def scenario():
        node = new_node(records)
        events = node.subscribe()
        await node.start(config_of(first))
        callee, caller = await start_call(sipp, lab, tmp_path, 3000)
        await wait_until(lambda: [c.state for c in node.calls()] == ["Answered"])
        call_before = node.calls()[0]

        second = lab.document()
        second["listeners"].append(
            {"name": "extra", "transport": "tcp", "address": HOST, "port": 0}
        )
        second["trunks"] += [
            spare_trunk("changed", 5999, max_calls=5),
            spare_trunk("added", 5997),
        ]
        outcomes = await node.apply(config_of(second))
        during = node.calls()
        trunks = sorted(view.name for view in node.trunks())
        listening = list(node.endpoint.listening)

        caller_code, caller_output = await finish_sipp(caller)
        callee_code, callee_output = await finish_sipp(callee)
        await wait_until(lambda: len(records.records) == 1)
        await node.stop()
        seen = [event async for event in events]
        return (
            outcomes, call_before, during, trunks, listening,
            (caller_code, caller_output), (callee_code, callee_output), seen,
        )  # fmt: skip

    outcomes, before, during, trunks, listening, caller, callee, seen = asyncio.run(
        scenario()
    )

    assert set(outcomes.values()) == {Outcome(True)}
    assert ("trunk", "added") in outcomes and ("trunk", "removed") not in outcomes
    assert trunks == ["added", "callee", "caller", "changed"]
    assert [spec.transport for spec in listening] == ["UDP", "TCP"]
    assert [c.call_id for c in during] == [before.call_id]
    assert (before.a_trunk, before.b_trunk) == ("caller", "callee")
    assert caller[0] == 0, caller[1]
    assert callee[0] == 0, callee[1]
    [record] = records.records
    assert record.disposition is Disposition.ANSWERED
    assert record.hangup_side is HangupSide.CALLER
    assert records.closed
    assert [type(e) for e in seen if isinstance(e, (CallStarted, CallEnded))] == [
        CallStarted,
        CallEnded,
    ]


def test_failed_apply_leaves_listeners_trunks_and_calls_as_they_were(tmp_path):
    sipp = require_tool("sipp", "sip-tester")
    lab = Lab()
    records = Records()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind((HOST, 0))
    busy_port = taken.getsockname()[1]

    async def scenario():
        node = new_node(records)
        await node.start(config_of(lab.document()))
        running = node.config
        listening = list(node.endpoint.listening)

        broken = lab.document()
        broken["listeners"] += [
            {"name": "fresh", "transport": "tcp", "address": HOST, "port": 0},
            {"name": "busy", "transport": "udp", "address": HOST, "port": busy_port},
        ]
        broken["trunks"].append(spare_trunk("added", 5997))
        broken["dial_plans"][0]["routes"][0]["prefix"] = "9"
        outcomes = await node.apply(config_of(broken))
        after = (node.config, list(node.endpoint.listening), node.trunks())

        # The engines still route as before the refused change.
        callee, caller = await start_call(sipp, lab, tmp_path, 100)
        caller_result = await finish_sipp(caller)
        await finish_sipp(callee)
        await node.stop()
        return running, listening, outcomes, after, caller_result

    running, listening, outcomes, after, caller = asyncio.run(scenario())
    taken.close()

    busy = outcomes[("listener", "busy")]
    assert not busy.applied and "cannot listen" in busy.reason
    for key in (("listener", "fresh"), ("trunk", "added"), ("dial_plan", "plan")):
        assert outcomes[key] == Outcome(False, "not applied: listener 'busy' failed")
    assert outcomes[("trunk", "caller")] == Outcome(True)
    config, listening_after, trunks = after
    assert config is running
    assert listening_after == listening
    assert sorted(t.name for t in trunks) == ["callee", "caller"]
    assert caller[0] == 0, caller[1]
    assert len(records.records) == 1


def test_moving_a_listener_opens_the_new_socket_and_closes_the_old(tmp_path):
    lab = Lab()
    records = Records()

    async def scenario():
        node = new_node(records)
        await node.start(config_of(lab.document()))
        moved = lab.document()
        new_port = free_port()
        moved["listeners"][0]["port"] = new_port
        outcomes = await node.apply(config_of(moved))
        listening = list(node.endpoint.listening)
        status_new = await request_status("OPTIONS", new_port, "moved-1")
        await node.stop()
        return outcomes, listening, new_port, status_new

    outcomes, listening, new_port, status_new = asyncio.run(scenario())

    assert outcomes[("listener", "lo")] == Outcome(True)
    assert listening == [ListenSpec("UDP", HOST, new_port)]
    assert status_new == 200
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, lab.sbc_port))  # the old socket is closed


def test_disabled_trunk_gets_503_and_draining_waits_for_its_last_call(tmp_path):
    sipp = require_tool("sipp", "sip-tester")
    lab = Lab()
    records = Records()

    async def scenario():
        node = new_node(records)
        events = node.subscribe()
        await node.start(config_of(lab.document()))
        node.set_trunk_mode("caller", TrunkMode.DISABLED)
        refused = await invite_status(lab.sbc_port, "disabled-1")
        node.set_trunk_mode("caller", TrunkMode.ENABLED)

        callee, caller = await start_call(sipp, lab, tmp_path, 2000)
        await wait_until(lambda: [c.state for c in node.calls()] == ["Answered"])
        draining = node.set_trunk_mode("caller", TrunkMode.DRAINING)
        refused_while_draining = await invite_status(lab.sbc_port, "draining-1")
        caller_result = await finish_sipp(caller)
        await finish_sipp(callee)
        await wait_until(lambda: node.trunk("caller").mode is TrunkMode.DISABLED)
        await node.stop()
        changes = [
            e for e in [e async for e in events] if isinstance(e, TrunkStateChanged)
        ]
        return refused, draining, refused_while_draining, caller_result, changes

    refused, draining, refused_while_draining, caller, changes = asyncio.run(scenario())

    assert refused == 503
    assert (draining.state, draining.active_calls) == ("draining", 1)
    assert refused_while_draining == 503
    assert caller[0] == 0, caller[1]
    answered = [r for r in records.records if r.disposition is Disposition.ANSWERED]
    assert len(answered) == 1
    assert [(c.trunk, c.state) for c in changes] == [
        ("caller", "disabled"),
        ("caller", "up"),
        ("caller", "draining"),
        ("caller", "disabled"),
    ]


def test_hang_up_ends_an_answered_call_on_both_legs(tmp_path):
    sipp = require_tool("sipp", "sip-tester")
    lab = Lab()
    records = Records()

    async def scenario():
        node = new_node(records)
        await node.start(config_of(lab.document()))
        callee, caller = await start_call(sipp, lab, tmp_path, 20000)
        await wait_until(lambda: [c.state for c in node.calls()] == ["Answered"])
        [call] = node.calls()
        ended = node.hang_up(call.call_id)
        again = node.hang_up("no-such-call")
        await wait_until(lambda: len(records.records) == 1)
        callee_result = await finish_sipp(callee)
        # The UAC's scenario does not expect a BYE: it aborts the call on it.
        caller_result = await finish_sipp(caller)
        await node.stop()
        return call, ended, again, callee_result, caller_result

    call, ended, again, callee, caller = asyncio.run(scenario())

    assert ended and not again
    assert call.answer_time is not None and call.answer_time >= call.start_time
    [record] = records.records
    assert record.hangup_side is HangupSide.SBC
    assert record.end_reason == "operator"
    assert callee[0] == 0, callee[1]  # the callee got its BYE and answered it
    assert caller[0] == 1, caller[1]  # SIPp: a call failed (on our BYE)


def self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 made by openssl (an independent tool)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=sbc.test",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


async def options_over_tls(port: int, cafile: str) -> bytes:
    context = ssl.create_default_context(cafile=cafile)
    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=context, server_hostname=HOST
    )
    local = writer.get_extra_info("sockname")[1]
    writer.write(
        (
            f"OPTIONS sip:{HOST}:{port};transport=tls SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {HOST}:{local};branch=z9hG4bKtls1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@sbc.test>;tag=1\r\n"
            f"To: <sip:{HOST}>\r\nCall-ID: tls-1\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return status_line


def test_tls_listener_added_live_serves_its_own_certificate(tmp_path):
    lab = Lab()
    cert, key = self_signed(tmp_path)

    async def scenario():
        node = new_node(Records())
        await node.start(config_of(lab.document()))
        unreadable = lab.document()
        unreadable["listeners"].append(
            {"name": "tls", "transport": "tls", "address": HOST, "port": 0,
             "tls_cert": cert, "tls_key": str(tmp_path / "missing.pem")}
        )  # fmt: skip
        refused = await node.apply(config_of(unreadable))
        with_tls = lab.document()
        with_tls["listeners"].append(unreadable["listeners"][1] | {"tls_key": key})
        applied = await node.apply(config_of(with_tls))
        port = node.endpoint.listening[-1].port
        answer = await options_over_tls(port, cert)
        await node.stop()
        return refused, applied, answer

    refused, applied, answer = asyncio.run(scenario())

    assert not refused[("listener", "tls")].applied
    assert "TLS certificate or key unusable" in refused[("listener", "tls")].reason
    assert applied[("listener", "tls")] == Outcome(True)
    assert answer.startswith(b"SIP/2.0 200 OK")
