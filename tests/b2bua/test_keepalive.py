"""OPTIONS keepalive: thresholds, trunk state, and routing around a down trunk."""

from __future__ import annotations

from b2bua_harness import ANSWER, BACKUP, CALLEE, SBC, Lab, lab_config

from sbc.b2bua import B2buaSettings
from sbc.b2bua.keepalive import (
    KeepaliveMonitor,
    TargetCameUp,
    TargetWentDown,
    TrunkCameUp,
    TrunkWentDown,
    keepalive_monitors,
)
from sbc.routing import TargetKey

PBX_TARGET = TargetKey("pbx", "192.0.2.20", 5060, "udp")


def _monitor(interval=60, down=3, up=2, targets=None):
    pbx = {
        "keepalive": {"interval": interval, "down_threshold": down, "up_threshold": up}
    }
    if targets is not None:
        pbx["targets"] = targets
    config = lab_config({"pbx": pbx})
    lab = Lab(config=config)
    [trunk] = [t for t in config.trunks if t.name == "pbx"]
    endpoints = {e.transport: e for e in B2buaSettings.from_config(config).endpoints}
    monitor = KeepaliveMonitor(
        lab.sbc.layer, trunk, endpoints, lab.rng, lab.engine.down_trunks
    )
    lab.engine.attach(monitor)
    monitor.start(lab.now)
    return lab, monitor


def _events(monitor):
    events = []
    while (event := monitor.next_event()) is not None:
        events.append(event)
    return events


def _pings(lab, destination=CALLEE):
    return [
        w.at
        for w in lab.wire
        if w.source == SBC
        and w.destination == destination
        and w.data.startswith(b"OPTIONS ")
    ]


def test_answered_pings_keep_trunk_up_at_interval():
    lab, monitor = _monitor(interval=60)
    start = lab.now

    lab.advance(250)

    assert _pings(lab) == [start + 60 * n for n in range(5)]
    options = lab.callee.last("OPTIONS").request
    assert options.uri == "sip:192.0.2.20:5060" and options.max_forwards == 70
    assert "pbx" not in lab.engine.down_trunks
    # The first answer is the trunk's first verdict; later ones change nothing.
    assert _events(monitor) == [TargetCameUp(PBX_TARGET), TrunkCameUp("pbx")]


def test_trunk_down_after_threshold_misses_not_before():
    lab, monitor = _monitor(interval=60, down=3)
    lab.drop = lambda wire: wire.destination == CALLEE
    start = lab.now

    # Misses end at Timer F, 32 s after each ping at 0, 60 and 120 s.
    lab.advance(120 + 31)
    assert "pbx" not in lab.engine.down_trunks
    lab.advance(2)

    assert "pbx" in lab.engine.down_trunks
    assert monitor.down_targets == {PBX_TARGET}
    assert _events(monitor) == [TargetWentDown(PBX_TARGET), TrunkWentDown("pbx")]
    assert lab.now - start > 152


def test_trunk_up_after_threshold_answers():
    lab, monitor = _monitor(interval=60, down=2, up=2)
    lab.drop = lambda wire: wire.destination == CALLEE
    lab.advance(100)
    assert "pbx" in lab.engine.down_trunks
    _events(monitor)
    lab.drop = None

    lab.advance(60)  # one answered ping
    assert "pbx" in lab.engine.down_trunks
    lab.advance(60)  # the second one

    assert "pbx" not in lab.engine.down_trunks
    assert _events(monitor) == [TargetCameUp(PBX_TARGET), TrunkCameUp("pbx")]


def test_error_response_counts_as_answer():
    lab, monitor = _monitor(interval=30, down=1)
    lab.callee.on_request = lambda event: lab.callee.respond(event, 503)

    lab.advance(200)

    assert len(_pings(lab)) == 7
    assert "pbx" not in lab.engine.down_trunks


def test_miss_streak_broken_by_an_answer():
    lab, monitor = _monitor(interval=60, down=2)
    start = lab.now
    # Pings at 0, 120, 240 ... go unanswered; those at 60, 180 ... answered.
    lab.drop = lambda wire: (
        wire.destination == CALLEE and (wire.at - start) // 60 % 2 == 0
    )

    lab.advance(400)

    assert len(lab.callee.requests) == 3
    assert "pbx" not in lab.engine.down_trunks
    assert _events(monitor) == []


def test_trunk_stays_up_while_one_target_answers():
    targets = [{"host": "192.0.2.20"}, {"host": "192.0.2.21"}]
    lab, monitor = _monitor(interval=60, down=1, targets=targets)
    lab.drop = lambda wire: wire.destination == CALLEE

    lab.advance(100)

    assert monitor.down_targets == {PBX_TARGET}
    assert "pbx" not in lab.engine.down_trunks
    assert _pings(lab, BACKUP)


def test_down_trunk_skipped_by_routing():
    lab, monitor = _monitor(interval=60, down=1)
    lab.drop = lambda wire: wire.destination == CALLEE
    lab.advance(40)
    assert "pbx" in lab.engine.down_trunks
    lab.drop = None

    call = lab.caller.invite()
    lab.run()
    lab.backup.respond(lab.backup.last("INVITE"), 200, body=ANSWER)
    lab.run()

    assert call.final is not None and call.final.status == 200
    assert "INVITE" not in lab.callee.methods()
    lab.backup.send_in_dialog(lab.backup.dialog(), "BYE")
    lab.run()
    [record] = lab.sbc.records
    assert record.b_trunk == "backup"


def test_stop_ends_pings():
    lab, monitor = _monitor(interval=60)
    lab.advance(1)
    monitor.stop()

    lab.advance(600)

    assert len(_pings(lab)) == 1
    assert monitor.next_timer() is None


def test_keepalive_monitors_one_per_trunk_with_keepalive():
    config = lab_config({"pbx": {"keepalive": {}}, "backup": {"keepalive": {}}})
    lab = Lab(config=config)
    endpoints = {e.transport: e for e in B2buaSettings.from_config(config).endpoints}

    monitors = keepalive_monitors(
        lab.sbc.layer, config, endpoints, lab.rng, lab.engine.down_trunks
    )
    for monitor in monitors:
        lab.engine.attach(monitor)
        monitor.start(lab.now)
    lab.advance(1)

    assert len(monitors) == 2
    assert len(_pings(lab, CALLEE)) == len(_pings(lab, BACKUP)) == 1
