"""A protected trunk without SAs: nothing in clear, backup routes, recovery.

Two `sbc serve` nodes from the example files (moved to the test's own
loopback addresses), a capture of everything between them, SIPp as PBX and
carrier. While node B is down, node A's trunk to it has no SA: calls are
refused or take the backup trunk, and the SIP and RTP of calls that were
crossing it when B died are dropped, never sent in clear. tshark reads the
capture: only IKE, ESP in UDP and ICMP errors about them.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from two_node_lab import (
    FAST_DPD,
    lab_addresses,
    lab_settings,
    moved,
    profiles,
    requirements,
)

from sbc.demo import (
    EXAMPLES,
    Capture,
    DemoSettings,
    NodeProcess,
    Topology,
    carrier,
    check_capture,
    pbx,
    wait_for_records,
)

DPD_BOUND = 4.1
"""FAST_DPD: 1 s of silence, then 0.5 x (1 + 1.8 + 1.8^2) s of retransmissions."""
SLACK = 6.0
"""What a loaded machine adds (a busy event loop, the admin API's polling)."""


def protection(node: NodeProcess, trunk: str) -> str | None:
    views = {view["name"]: view for view in node.get("/runtime/trunks")}
    return views[trunk]["protection"]


def wait_protection(node: NodeProcess, trunk: str, up: bool, timeout: float) -> float:
    """Seconds until the trunk's protection is (or is no longer) up."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if (protection(node, trunk) == "up") == up:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"trunk {trunk} still {protection(node, trunk)!r}")


def place(settings: DemoSettings, directory: Path, calls: int) -> Any:
    topology = Topology.read(settings.config_a, settings.config_b)
    return pbx(settings, topology, directory, calls)


def with_backup(document: dict[str, Any], peers: str) -> dict[str, Any]:
    """Node A with a plain trunk straight to the carrier, tried after node B."""
    address = document["ipsec"]["address"]
    listeners = [
        *document["listeners"],
        {"name": "backup-udp", "transport": "udp", "address": address, "port": 5064},
    ]
    backup = {
        "name": "backup", "kind": "carrier", "listeners": ["backup-udp"],
        "targets": [{"host": peers, "port": 5080}],
    }  # fmt: skip
    plans = [
        {"name": "from-pbx", "routes": [{"prefix": "", "candidates": [
            {"trunk": "node-b", "priority": 1}, {"trunk": "backup", "priority": 2},
        ]}]},
        *(plan for plan in document["dial_plans"] if plan["name"] != "from-pbx"),
    ]  # fmt: skip
    return {
        "listeners": listeners,
        "trunks": [*document["trunks"], backup],
        "dial_plans": plans,
        "ipsec_profiles": profiles(document, **FAST_DPD),
    }


@pytest.mark.peer("sipp")
@pytest.mark.root
def test_trunk_without_sa_sends_nothing_in_clear(tmp_path):
    """Node B never starts: A's calls are refused; only IKE leaves."""
    requirements()
    addresses = lab_addresses()
    settings = lab_settings(tmp_path, addresses, calls=4)
    pcap = tmp_path / "between.pcap"
    capture = Capture(pcap, addresses[0], addresses[1])
    a = NodeProcess("node-a", settings.config_a, tmp_path / "a")
    topology = Topology.read(settings.config_a, settings.config_b)
    try:
        a.start()
        uas = carrier(settings, topology, tmp_path / "carrier")
        try:
            outcome = place(settings, tmp_path / "pbx", 4).wait(60)
        finally:
            uas.stop()
        assert protection(a, "node-b") != "up"
    finally:
        a.stop()
        dropped = capture.stop()

    assert outcome.successful == 0 and outcome.failed == 4
    records = a.records()
    assert len(records) == 4
    assert {record["final_status"] for record in records} == {480}
    assert all(record["b_trunk"] is None for record in records)
    check = check_capture(pcap, dropped)
    assert check.clear == () and check.dropped == 0, check
    assert check.ike > 0 and check.esp == 0


@pytest.mark.peer("sipp")
@pytest.mark.root
def test_peer_death_fails_over_to_the_backup_and_the_trunk_comes_back(tmp_path):
    requirements()
    addresses = lab_addresses()
    document_a = moved(EXAMPLES / "two-node-a.yaml", addresses)
    settings = lab_settings(
        tmp_path, addresses, a=with_backup(document_a, addresses[2]),
        b={"ipsec_profiles": profiles(moved(EXAMPLES / "two-node-b.yaml", addresses),
                                      **FAST_DPD)},
    )  # fmt: skip
    topology = Topology.read(settings.config_a, settings.config_b)
    pcap = tmp_path / "between.pcap"
    capture = Capture(pcap, addresses[0], addresses[1])
    a = NodeProcess("node-a", settings.config_a, tmp_path / "a")
    b = NodeProcess("node-b", settings.config_b, tmp_path / "b")
    uas = carrier(settings, topology, tmp_path / "carrier")
    try:
        b.start()
        a.start()
        a.wait_protected(["node-b"], 30)
        # Calls in progress with RTP when B dies: their packets lose the SA.
        crossing = place(settings, tmp_path / "pbx-1", 3)
        wait_for_answers(b, 3)
        b.stop(signal.SIGKILL)
        went_down = wait_protection(a, "node-b", up=False, timeout=30)
        assert went_down < DPD_BOUND + SLACK, went_down
        crossing.wait(60)

        backup = place(settings, tmp_path / "pbx-2", 2).wait(60)
        assert (backup.successful, backup.failed) == (2, 0)

        b_again = NodeProcess("node-b", settings.config_b, tmp_path / "b-again")
        b = b_again
        b.start()
        wait_protection(a, "node-b", up=True, timeout=60)
        again = place(settings, tmp_path / "pbx-3", 2).wait(60)
        assert (again.successful, again.failed) == (2, 0)
        wait_for_records(b, 2)
    finally:
        uas.stop()
        a.stop()
        b.stop()
        dropped = capture.stop()

    wait_for_records(a, 7)
    routes = [record["b_trunk"] for record in a.records()]
    assert routes.count("backup") == 2, routes
    assert routes.count("node-b") == 5, routes
    assert len(b.records()) == 2
    check = check_capture(pcap, dropped)
    assert check.clear == () and check.dropped == 0, check
    assert check.esp > 0 and check.ike > 0


def wait_for_answers(node: NodeProcess, calls: int, timeout: float = 20.0) -> None:
    """Until ``calls`` calls are answered and in progress on ``node``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = [c for c in node.get("/runtime/calls") if c["answer_time"]]
        if len(answered) >= calls:
            time.sleep(1.0)  # a second of RTP through the SA
            return
        time.sleep(0.1)
    raise AssertionError(f"{calls} calls not answered on node {node.name}")
