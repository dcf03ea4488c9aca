"""Calls over a tunnel-mode secure trunk to strongSwan as the carrier's gateway.

Namespace A holds `sbc serve` (IKE on 192.0.2.1) and SIPp as the PBX on
its loopback; namespace B holds charon 5.9.8 (kernel-libipsec, tunnel mode,
``encap = yes``) and, behind it on 10.2.0.1, SIPp as the carrier answering
with A-law and echoing RTP. The trunk ``carrier`` is protected by a
tunnel-mode profile: the node's inner address 10.1.0.2 is its Via, Contact
and SDP address toward the carrier, and charon routes the carrier's answers
and RTP to it through its TUN device and the ESP SAs. Every call passes
with RTP both ways on both legs, and the call records name the tunnel SA.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_charon import (
    CHARON_ADDRESS,
    CHARON_ID,
    CHARON_INNER,
    OUR_ADDRESS,
    OUR_ID,
    PSK,
    charon_connection,
    charon_lab,  # noqa: F401 (the fixture, used by name)
)

from sbc.demo import (
    CALL_SECONDS,
    PCAP_AUDIO,
    UAC_SCENARIO,
    UAS_SCENARIO,
    MediaCheck,
    NodeProcess,
    Sipp,
    wait_for_records,
)

SUITE = ("aes128gcm16-prfsha256-x25519", "aes128gcm16")
INNER = "10.1.0.2"
"""Our inner address: the ipsec listener's and the B-legs' media."""
CALLS = 4
SIP_PORT = 5060


def node_config(path: Path) -> Path:
    path.write_text(
        f"""
ipsec: {{node: sbc-a, address: {OUR_ADDRESS}, identity: {OUR_ID}}}
listeners:
  - {{name: pbx-udp, transport: udp, address: 127.0.0.1, port: {SIP_PORT}}}
  - {{name: sec, transport: udp, address: {INNER}, port: {SIP_PORT}, ipsec: true}}
ipsec_profiles:
  - name: gateway
    psk: '{PSK}'
    mode: tunnel
    # kernel-libipsec refuses ESN ("ESN not supported").
    esp_proposals: [{{encryption: aes128gcm16, esn: false}}]
trunks:
  - name: pbx
    kind: pbx
    listeners: [pbx-udp]
    targets: [{{host: 127.0.0.1, port: 5070}}]
    inbound: {{allow: [127.0.0.1/32]}}
    dial_plan: from-pbx
  - name: carrier
    kind: carrier
    listeners: [sec]
    targets: [{{host: {CHARON_INNER}, port: {SIP_PORT}}}]
    inbound: {{allow: [10.2.0.0/24]}}
    ipsec_profile: gateway
    ipsec_gateway: {CHARON_ADDRESS}
    ipsec_networks: [10.2.0.0/24]
    ipsec_identity: {CHARON_ID}
dial_plans:
  - {{name: from-pbx, routes: [{{prefix: '', candidates: [{{trunk: carrier}}]}}]}}
media: {{address: 127.0.0.1}}
""",
        encoding="utf-8",
    )
    return path


def sipp_in(namespace: str, directory: Path, scenario: str, *argv: str) -> Sipp:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "scenario.xml"
    path.write_text(scenario)
    wrapper = ["ip", "netns", "exec", namespace, "sipp", "-sf", str(path)]
    return Sipp(directory, [*wrapper, *argv, "-nostdin"])


@pytest.mark.peer("charon")
@pytest.mark.peer("sipp")
@pytest.mark.root
def test_calls_reach_a_carrier_behind_charon_with_media_both_ways(
    charon_lab,  # noqa: F811
    tmp_path,
):
    lab, charon = charon_lab
    charon.load(charon_connection(SUITE))
    node = NodeProcess(
        "sbc-a", node_config(tmp_path / "sbc.yaml"), tmp_path / "node",
        wrapper=["ip", "netns", "exec", lab.a.name],
    )  # fmt: skip
    carrier = sipp_in(
        lab.b.name, tmp_path / "carrier", UAS_SCENARIO,
        "-i", CHARON_INNER, "-p", str(SIP_PORT), "-mi", CHARON_INNER,
        "-mp", "6100", "-rtp_echo", "-trace_msg", "-message_file", "messages.log",
    )  # fmt: skip
    try:
        node.start()
        node.wait_for("trunk carrier up")
        scenario = UAC_SCENARIO.replace("@PCAP@", str(PCAP_AUDIO)).replace(
            "@PAUSE@", str(int(CALL_SECONDS * 1000))
        )
        pbx = sipp_in(
            lab.a.name, tmp_path / "pbx", scenario, "-s", "2125550100",
            "-i", "127.0.0.1", "-p", "5070", "-mi", "127.0.0.1", "-mp", "6000",
            "-m", str(CALLS), "-l", str(CALLS), "-r", "4", "-timeout", "60s",
            "-timeout_error", "-trace_stat", "-stf", "stat.csv",
            f"127.0.0.1:{SIP_PORT}",
        )  # fmt: skip
        outcome = pbx.wait(90)
        wait_for_records(node, CALLS)
        listing = charon.list_sas()
    finally:
        carrier.stop()
        node.stop()

    log = (tmp_path / "node" / "sbc.log").read_text()
    assert (outcome.successful, outcome.failed) == (CALLS, 0), (
        tmp_path / "pbx" / "sipp.out"
    ).read_text()[-2000:] + log[-3000:]
    records = node.records()
    media = MediaCheck.of(records)
    assert media.records == media.both_ways == CALLS, records
    assert {record["b_trunk"] for record in records} == {"carrier"}
    assert {record["ipsec"]["b"]["mode"] for record in records} == {"tunnel"}
    invite = first_invite(tmp_path / "carrier" / "messages.log")
    assert re.search(rf"^Via: SIP/2.0/UDP {INNER}:{SIP_PORT};", invite, re.M), invite
    assert re.search(rf"^Contact: <sip:[^>]*@?{INNER}:{SIP_PORT}[;>]", invite, re.M)
    assert f"c=IN IP4 {INNER}" in invite and "127.0.0.1" not in invite, invite
    # charon carried each call's 236 RTP packets each way on its CHILD_SA.
    counts = re.findall(r"(in|out) +[0-9a-f]{8}, +\d+ bytes, +(\d+) packets", listing)
    assert {direction for direction, _ in counts} == {"in", "out"}, listing
    assert all(int(packets) >= CALLS * 236 for _, packets in counts), listing


def first_invite(messages: Path) -> str:
    """The first INVITE SIPp received, from its ``-trace_msg`` file."""
    text = messages.read_text(errors="replace")
    start = text.index("INVITE sip:")
    end = text.find("----------", start)
    return text[start:end].replace("\r\n", "\n")
