"""Rekeys under load: 20 calls with RTP cross a secure trunk while its
CHILD_SA and its IKE_SA are rekeyed; no packet is lost, no call dropped.

Both nodes run in the test's event loop (`sbc.node.Node` with the secure
runtime) from the example files moved to the test's own loopback
addresses; SIPp is the PBX (20 calls, each playing 236 A-law packets) and
the carrier (echoing them). Node A's profile gets lifetimes far below what
the configuration model accepts (4 s for the CHILD_SA, 6 s for the IKE_SA),
so that both rekeys fall inside the calls; node B keeps the defaults, so A
starts every rekey. Every leg of every call on both nodes then counts all
236 packets each way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from two_node_lab import lab_addresses, lab_settings, requirements

from ipsec.ike.daemon import ChildSaInstalled, IkeSaRekeyed
from sbc.config import load_config
from sbc.config.model import Config
from sbc.demo import Topology, carrier, pbx
from sbc.io.settings import TransportSettings
from sbc.node import Node, NodeSettings
from sbc.secure import node_runtime

CALLS = 20
PACKETS = 236
"""RTP packets in SIPp's g711a.pcap, played once per call."""


def short_lived(config: Config, child: float, ike: float) -> Config:
    """``config`` with lifetimes the model would refuse (model_copy skips
    validation): the rekeys of a test, not of a deployment."""
    profiles = [
        profile.model_copy(
            update={
                "lifetimes": profile.lifetimes.model_copy(
                    update={"child_seconds": child, "ike_seconds": ike}
                )
            }
        )
        for profile in config.ipsec_profiles
    ]
    return config.model_copy(update={"ipsec_profiles": profiles})


def new_node() -> tuple[Node, list[Any]]:
    records: list[Any] = []

    class Sink:
        def write(self, record: Any) -> None:
            records.append(record)

    node = Node(
        NodeSettings(TransportSettings(listen=())), Sink(), secure_runtime=node_runtime
    )
    return node, records


@pytest.mark.peer("sipp")
@pytest.mark.root
def test_child_and_ike_rekeys_mid_call_lose_no_packet(tmp_path):
    requirements()
    settings = lab_settings(tmp_path, lab_addresses(), calls=CALLS, rate=40.0)
    topology = Topology.read(settings.config_a, settings.config_b)
    config_a = short_lived(load_config(settings.config_a), child=4.0, ike=6.0)
    config_b = load_config(settings.config_b)

    async def scenario() -> tuple[list[Any], list[Any], list[tuple[Any, int]], Any]:
        loop = asyncio.get_running_loop()
        node_b, records_b = new_node()
        node_a, records_a = new_node()
        seen: list[tuple[Any, int]] = []
        uas = carrier(settings, topology, tmp_path / "carrier")
        try:
            await node_b.start(config_b)
            await node_a.start(config_a)
            secure = node_a.secure
            assert secure is not None
            secure.subscribe(lambda event: seen.append((event, len(node_a.calls()))))
            await until(lambda: secure.trunk_protection() == {"node-b": "up"}, 15)
            uac = pbx(settings, topology, tmp_path / "pbx", CALLS)
            outcome = await loop.run_in_executor(None, uac.wait, 60.0)
            await until(lambda: len(records_a) == len(records_b) == CALLS, 10)
            snapshot = node_a.snapshot()
        finally:
            uas.stop()
            await node_a.stop()
            await node_b.stop()
        assert (outcome.successful, outcome.failed) == (CALLS, 0)
        return records_a, records_b, seen, snapshot

    records_a, records_b, seen, snapshot = asyncio.run(
        asyncio.wait_for(scenario(), 120)
    )

    child_rekeys = [
        active
        for event, active in seen
        if isinstance(event, ChildSaInstalled) and event.rekeyed_spi is not None
    ]
    ike_rekeys = [active for event, active in seen if isinstance(event, IkeSaRekeyed)]
    # Each happened while the calls were up (their RTP flowing).
    assert CALLS in child_rekeys, seen
    assert CALLS in ike_rekeys, seen
    for records in (records_a, records_b):
        assert len(records) == CALLS
        assert {record.disposition.value for record in records} == {"answered"}
        assert {record.end_reason for record in records} == {None}
        for record in records:
            for leg in ("0.A", "0.B"):
                counters = record.media[leg]
                assert counters["packets_received"] == PACKETS, (leg, counters)
                assert counters["packets_sent"] == PACKETS, (leg, counters)
                assert counters["packets_lost"] == 0, (leg, counters)
    assert not {
        k: v for k, v in snapshot["ipsec"].items() if k.startswith("drop") and v
    }


async def until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)
