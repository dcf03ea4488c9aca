"""TrunkServices: trunk events reach subscribers, the log and the counters.

The engine and its transaction layer run on a fake clock with no network:
pings to the carrier are lost until the test answers one itself.
"""

from __future__ import annotations

import logging
import random

from sbc.b2bua import B2bua, B2buaSettings
from sbc.b2bua.keepalive import (
    TargetCameUp,
    TargetWentDown,
    TrunkCameUp,
    TrunkWentDown,
)
from sbc.config.model import Config
from sbc.io.trunk_state import TrunkServices
from sbc.routing import TargetKey
from sbc.sip.message import Request, make_response
from sbc.sip.parser import parse_message
from sbc.sip.timers import TimerValues
from sbc.sip.transaction import TransactionLayer

CARRIER = ("192.0.2.7", 5060)
TARGET = TargetKey("carrier", *CARRIER, "udp")
TIMER_F = 64 * TimerValues().t1


class Lab:
    """One engine with its services; every datagram sent is kept, none delivered."""

    def __init__(self, keepalive: dict) -> None:
        config = Config.model_validate(
            {
                "listeners": [
                    {"name": "lo", "transport": "udp", "address": "127.0.0.1"}
                ],
                "trunks": [
                    {
                        "name": "carrier",
                        "kind": "carrier",
                        "listeners": ["lo"],
                        "targets": [{"host": CARRIER[0], "port": CARRIER[1]}],
                        "keepalive": keepalive,
                    }
                ],
            }
        )
        settings = B2buaSettings.from_config(config)
        self.now = 1000.0
        self.layer = TransactionLayer(TimerValues())
        self.engine = B2bua(self.layer, config, settings, random.Random(1), [])
        self.services = TrunkServices(
            self.layer, self.engine, config, settings.endpoints, random.Random(2)
        )
        self.sent: list[Request] = []

    def advance(self, seconds: float) -> None:
        """Fire every timer due up to ``seconds`` from now (bounded)."""
        end = self.now + seconds
        for _ in range(10_000):
            due = [
                t
                for t in (self.layer.next_timer(), self.engine.next_timer())
                if t is not None and t <= end
            ]
            if not due:
                break
            self.now = min(due)
            self.layer.handle_timer(self.now)
            self.engine.handle_timer(self.now)
            self.collect()
        self.now = end

    def collect(self) -> None:
        for data, _, _ in self.layer.datagrams_to_send():
            message = parse_message(data)
            if isinstance(message, Request):
                self.sent.append(message)

    def pings(self) -> set[str]:
        """Call-IDs of the OPTIONS sent (each ping has its own)."""
        return {r.headers.get("Call-ID") or "" for r in self.sent}

    def answer_last_options(self) -> None:
        options = [r for r in self.sent if r.method == "OPTIONS"][-1]
        response = make_response(options, 200, to_tag="carrier")
        self.layer.receive_response(response, CARRIER, "UDP", self.now)
        self.engine.pump(self.now)


def test_trunk_down_then_up_published_counted_and_logged(caplog):
    lab = Lab({"interval": 10, "down_threshold": 1, "up_threshold": 1})
    seen = []
    lab.services.subscribe(seen.append)
    caplog.set_level(logging.INFO, logger="sbc.trunks")

    lab.services.start(lab.now)
    lab.advance(TIMER_F + 1)
    went_down = list(seen)
    lab.advance(10)
    lab.answer_last_options()

    assert went_down == [TargetWentDown(TARGET), TrunkWentDown("carrier")]
    assert seen[2:] == [TargetCameUp(TARGET), TrunkCameUp("carrier")]
    assert "carrier" not in lab.engine.down_trunks
    counters = lab.services.counters
    assert (counters["trunk_down"], counters["trunk_up"]) == (1, 1)
    assert (counters["target_down"], counters["target_up"]) == (1, 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "sbc.trunks"]
    assert "trunk event: carrier down" in lines
    assert "trunk event: carrier target 192.0.2.7:5060 up" in lines


def test_trunk_not_down_before_threshold_misses():
    lab = Lab({"interval": 10, "down_threshold": 2, "up_threshold": 1})
    seen = []
    lab.services.subscribe(seen.append)

    lab.services.start(lab.now)
    lab.advance(TIMER_F + 1)
    after_one_miss = list(seen)
    lab.advance(TIMER_F)

    assert after_one_miss == []
    assert seen == [TargetWentDown(TARGET), TrunkWentDown("carrier")]
    assert "carrier" in lab.engine.down_trunks


def test_stop_without_registration_leaves_nothing_pending():
    lab = Lab({"interval": 10, "down_threshold": 1, "up_threshold": 1})
    lab.services.start(lab.now)
    lab.advance(1)
    pings = lab.pings()

    lab.services.stop(lab.now)
    lab.advance(60)

    # Retransmissions of the pending ping go on; no new ping starts.
    assert len(pings) == 1
    assert lab.pings() == pings
    assert lab.services.unregistering == 0
