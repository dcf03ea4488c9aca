"""The two-node demo as a test: SIPp calls through two `sbc serve` nodes.

`sbc.demo.run_demo` runs the example pair (moved to the test's own loopback
addresses): SIPp's calls cross node A, the secure trunk and node B with RTP
both ways, and tshark finds only IKE and ESP in UDP between the nodes. With
the nodes' key logs tshark then opens the same capture: the IKE_AUTH
identities and, inside ESP, the calls' SIP and RTP.
"""

from __future__ import annotations

import pytest
from two_node_lab import lab_addresses, lab_settings, requirements

from sbc.demo import inner_frames, run_demo

CALLS = 6
SIP_PORT = 5062
"""The ipsec listeners' port in the example files."""


@pytest.mark.peer("sipp")
@pytest.mark.root
def test_calls_cross_the_secure_trunk_with_media_and_nothing_in_clear(tmp_path):
    requirements()
    addresses = lab_addresses()
    settings = lab_settings(tmp_path, addresses, calls=CALLS, rate=5.0, keylog=True)

    report = run_demo(settings)

    assert report.sipp.successful == CALLS and report.sipp.failed == 0
    for media in (report.media_a, report.media_b):
        assert media.records == media.answered == media.both_ways == CALLS
        assert media.packets_relayed > 0
    [ike] = report.security_associations
    assert ike["trunk"] == "node-b" and ike["peer"] == f"{addresses[1]}:4500"
    assert (ike["encryption"], ike["prf"], ike["dh_group"]) == (
        "ENCR_AES_GCM_16_128", "PRF_HMAC_SHA2_256", "CURVE25519",
    )  # fmt: skip
    [child] = ike["children"]
    assert child["encryption"] == "AES_GCM_16_128" and child["esn"]
    assert child["mode"] == "transport" and child["encapsulated"]
    assert child["packets_in"] > 0 and child["packets_out"] > 0
    capture = report.capture
    assert capture.holds, list(report.lines())
    assert capture.ike >= 4 and capture.esp > 0 and capture.clear == ()
    assert report.passed

    # Each node's key log holds the SAs it sends with.
    node_a, node_b = report.work_dir / "node-a", report.work_dir / "node-b"
    frames = inner_frames(
        report.work_dir / "between-nodes.pcap",
        [node_a / "esp_sa", node_b / "esp_sa"],
        node_a / "ikev2_decryption_table",
        [SIP_PORT],
    )
    identities = {fqdn for *_, fqdn in frames if fqdn}
    assert {"node-a.sbc.example", "node-b.sbc.example"} <= set(
        ",".join(identities).split(",")
    ), identities
    methods = [method for _, method, _, _, _ in frames if method]
    statuses = [status for _, _, status, _, _ in frames if status]
    # A GSO batch of several datagrams is one frame on lo and tshark reads
    # only its first packet, so a request sent in the same loop turn as
    # RTP can hide inside one: every kind shows, and most of the calls'.
    for method in ("INVITE", "ACK", "BYE"):
        assert method in methods, methods
    assert len(methods) >= 2 * CALLS, methods
    assert statuses.count("200") >= CALLS
    inside = [stack for stack, *_ in frames if ":esp:" in stack]
    rtp = [stack for stack in inside if stack.endswith(":rtp")]
    # 236 packets per call each way; a GSO batch of several is one frame on
    # lo, and tshark reads only its first packet.
    assert len(rtp) >= CALLS * 40, len(rtp)
    assert all(":udpencap:esp:" in stack for stack in rtp)
