"""The reconciler end to end: two ``sbc serve`` nodes built through their APIs.

Node A keeps its configuration in PostgreSQL, node B in SQLite. Everything
is created over the API (listeners, the IPsec profile, each node's own
ipsec section, trunks, dial plans); the test then checks what runs, not
what is stored: the objects' outcome states, the SAs in the live view, a
SIPp call across both nodes. A changed profile renews the SAs with the new
ESP proposal; a deleted trunk takes its SAs away on both nodes while a
call on a plain trunk of node B goes on untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_lab import PSK, ApiNode, NodeDatabases, TwoNodeLab, one_child_up, poll, spis

from sbc.demo import MediaCheck

pytestmark = [pytest.mark.timeout(400), pytest.mark.peer("sipp"), pytest.mark.root]
PCAP_PACKETS = 236
AES256 = {"esp_proposals": [{"encryption": "aes256gcm16"}]}


@pytest.fixture
def node_database(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    with NodeDatabases(tmp_path) as make:
        yield make


def child(views: list[dict[str, Any]]) -> dict[str, Any]:
    ike = views[0]
    assert len(ike["children"]) == 1
    found: dict[str, Any] = ike["children"][0]
    return found


def test_two_nodes_built_through_the_api_carry_calls_follow_changes(
    tmp_path: Path, node_database
) -> None:
    with TwoNodeLab(
        tmp_path, node_database("postgresql"), node_database("sqlite")
    ) as lab:
        node_a, node_b = lab.node_a, lab.node_b
        # Everything stored runs, and the SAs are up on both sides.
        objects_a = node_a.wait_applied()
        objects_b = node_b.wait_applied()
        views_a = node_a.wait_sas(one_child_up, 30, "SAs up")
        views_b = node_b.wait_sas(one_child_up, 30, "SAs up")
        audio = lab.call_with_audio("first-call")
        counted_a = node_a.sas()
        counted_b = node_b.sas()
        records_a = poll(lambda: node_a.cdrs() or None, 10, "A's record")
        records_b = poll(lambda: node_b.cdrs() or None, 10, "B's record")

        # Another ESP proposal: the responder first, then the initiator.
        node_b.replace(
            "/ipsec-profiles/mesh", {**lab.profile, "start_action": "none", **AES256}
        )
        node_a.replace(
            "/ipsec-profiles/mesh", {**lab.profile, "start_action": "start", **AES256}
        )
        old = spis(views_a)
        renewed_a = node_a.wait_sas(
            lambda v: one_child_up(v) and not spis(v) & old, 30, "SAs renewed"
        )
        renewed_b = node_b.wait_sas(
            lambda v: one_child_up(v) and not spis(v) & old, 30, "SAs renewed"
        )
        lab.calls_pass("after-the-change")
        node_a.wait_applied()
        node_b.wait_applied()

        # A long call on node B's plain path while the protected trunk goes.
        long_call = lab.call("long-call", hold_ms=8000, via_b=True)
        node_b.wait_sas(lambda v: True, 1, "views readable")
        answered = _wait_answered(node_b, "pbx-b")
        referenced = node_a.api.delete("/trunks/node-b")
        lab.route(node_a, "pbx", None)
        node_a.delete("/dial-plans/from-pbx")
        node_a.delete("/trunks/node-b")
        node_b.delete("/trunks/node-a")
        gone_a = node_a.wait_sas(lambda v: v == [], 15, "SAs deleted")
        gone_b = node_b.wait_sas(lambda v: v == [], 15, "SAs deleted")
        during = node_b.get("/runtime/calls")
        long_outcome = long_call.wait(60)
        trunks_b = {t["name"] for t in node_b.get("/runtime/trunks")}
        node_b.wait_applied()
        long_record = poll(lambda: _record_from(node_b, "pbx-b"), 10, "its record")

    kinds_a = sorted({o["kind"] for o in objects_a})
    assert kinds_a == [
        "dial_plan", "ipsec_node", "ipsec_profile", "listener", "media", "trunk"
    ]  # fmt: skip
    assert len(objects_a) == 9 and len(objects_b) == 10
    # The PSK went in through the API; it never comes out, nor into a log.
    for node, objects in ((lab.node_a, objects_a), (lab.node_b, objects_b)):
        [profile] = [o for o in objects if o["kind"] == "ipsec_profile"]
        assert profile["document"]["psk_set"] is True
        assert PSK not in json.dumps(objects)
        assert PSK not in (node.data_dir / "sbc.log").read_text(encoding="utf-8")
    for views, trunk in ((views_a, "node-b"), (views_b, "node-a")):
        ike, sa = views[0], child(views)
        assert (ike["trunk"], ike["encryption"], ike["prf"]) == (
            trunk, "ENCR_AES_GCM_16_128", "PRF_HMAC_SHA2_256"
        )  # fmt: skip
        assert (sa["encryption"], sa["mode"], sa["encapsulated"]) == (
            "AES_GCM_16_128", "transport", True
        )  # fmt: skip
    assert views_a[0]["initiator"] and not views_b[0]["initiator"]
    assert spis(views_a) == spis(views_b)
    assert (audio.successful, audio.failed) == (1, 0)
    # SIPp's A-law pcap is 236 RTP packets; each way they all rode the SAs.
    for counted in (counted_a, counted_b):
        assert child(counted)["packets_in"] >= PCAP_PACKETS
        assert child(counted)["packets_out"] >= PCAP_PACKETS
    for records in (records_a, records_b):
        assert MediaCheck.of(records).both_ways == 1
    assert [(r["a_trunk"], r["b_trunk"], r["disposition"]) for r in records_b] == [
        ("node-a", "carrier", "answered")
    ]
    assert records_b[0]["algorithms"] is not None
    for views in (renewed_a, renewed_b):
        assert child(views)["encryption"] == "AES_GCM_16_256"
    assert spis(renewed_a) == spis(renewed_b)
    assert answered["state"] == "Answered"
    assert referenced.status_code == 422
    assert "from-pbx" in referenced.text
    assert gone_a == [] and gone_b == []
    assert [call["a_trunk"] for call in during] == ["pbx-b"]
    assert (long_outcome.successful, long_outcome.failed) == (1, 0)
    assert trunks_b == {"carrier", "pbx-b"}
    assert (long_record["b_trunk"], long_record["disposition"]) == (
        "carrier", "answered"
    )  # fmt: skip
    assert long_record["duration"] >= 8


def _wait_answered(node: ApiNode, trunk: str) -> dict[str, Any]:
    def answered() -> dict[str, Any] | None:
        calls = [c for c in node.get("/runtime/calls") if c["a_trunk"] == trunk]
        return calls[0] if calls and calls[0]["state"] == "Answered" else None

    return poll(answered, 15, f"{node.name}: a call from {trunk} answered")


def _record_from(node: ApiNode, trunk: str) -> dict[str, Any] | None:
    records = [r for r in node.cdrs() if r["a_trunk"] == trunk]
    return records[0] if records else None
