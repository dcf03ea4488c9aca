"""The IPsec part of the configuration: field checks and cross-references,
reported by file and line through the YAML loader."""

from __future__ import annotations

import pytest

from sbc.config.loader import ConfigError, parse_config

BASE = """\
ipsec:
  node: sbc-a
  address: 192.0.2.1
listeners:
  - name: sec
    transport: udp
    address: 192.0.2.1
    ipsec: true
  - name: plain
    transport: udp
    address: 192.0.2.1
    port: 5070
ipsec_profiles:
  - name: strong
    psk: s3cret
trunks:
  - name: carrier
    kind: carrier
    listeners: [sec]
    targets:
      - host: 198.51.100.7
    ipsec_profile: strong
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="sbc.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_base_configuration_is_valid():
    config = parse_config(BASE)

    assert config.ipsec is not None and config.ipsec.ike_port == 500
    assert config.trunks[0].ipsec_profile == "strong"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("ipsec_profile: strong", "ipsec_profile: weak",
         "sbc.yaml:22: trunks[0].ipsec_profile: unknown IPsec profile 'weak'"),
        ("listeners: [sec]", "listeners: [plain]",
         "sbc.yaml:19: trunks[0].listeners[0]: listener 'plain' is not an ipsec "
         "listener: a protected trunk sends nothing in clear"),
        ("    ipsec_profile: strong\n", "",
         "sbc.yaml:19: trunks[0].listeners[0]: listener 'sec' lives inside IPsec: "
         "the trunk names no ipsec_profile"),
        ("host: 198.51.100.7", "host: carrier.example",
         "sbc.yaml:21: trunks[0].targets[0].host: a protected target is an IP "
         "address (it is the IKE peer)"),
        ("    address: 192.0.2.1\n    ipsec: true",
         "    address: 192.0.2.9\n    ipsec: true",
         "sbc.yaml:19: trunks[0].listeners[0]: in transport mode listener 'sec' "
         "and its media address must be the IKE address 192.0.2.1"),
        ("    transport: udp\n    address: 192.0.2.1\n    ipsec",
         "    transport: tcp\n    address: 192.0.2.1\n    ipsec",
         "sbc.yaml:5: listeners[0]: an ipsec listener carries udp only"),
        ("    psk: s3cret", "    psk: s3cret\n    mode: tunnel",
         "sbc.yaml:18: trunks[0].ipsec_gateway: tunnel mode needs the peer's IKE "
         "gateway"),
        ("  address: 192.0.2.1\nlisteners", "  address: 0.0.0.0\nlisteners",
         "sbc.yaml:1: ipsec: IKE needs a concrete address, not a wildcard"),
        ("  node: sbc-a", "  node: sbc-a\n  identity_type: ipv4\n  identity: a.example",
         "sbc.yaml:1: ipsec: identity does not fit type ipv4"),
    ],
)  # fmt: skip
def test_ipsec_faults_name_file_line_and_field(old, new, expected):
    assert old in BASE

    found = problems(BASE.replace(old, new))

    assert any(problem.startswith(expected) for problem in found), found


def test_tunnel_target_outside_the_peer_networks():
    text = BASE.replace("    psk: s3cret", "    psk: s3cret\n    mode: tunnel")
    text = text.replace(
        "    ipsec_profile: strong",
        "    ipsec_profile: strong\n    ipsec_gateway: 198.51.100.1\n"
        "    ipsec_networks: [10.2.0.0/24]",
    )

    assert problems(text) == [
        "sbc.yaml:22: trunks[0].targets[0].host: a tunnel-mode target is an IP "
        "address inside ipsec_networks"
    ]


def test_one_ike_peer_belongs_to_one_peering():
    text = (
        BASE
        + """\
mesh_peers:
  - name: node-b
    address: 198.51.100.7
    identity: b.sbc.example
    profile: strong
"""
    )

    found = problems(text)

    assert (
        "sbc.yaml:25: mesh_peers[0].address: IKE peer 198.51.100.7 already "
        "belongs to trunk 'carrier'"
    ) in found
    assert "sbc.yaml:1: ipsec.mesh_listener: mesh peers need a mesh_listener" in found


def test_mesh_peer_names_are_route_candidates_and_not_trunk_names():
    text = (
        BASE.replace("  node: sbc-a", "  node: sbc-a\n  mesh_listener: sec")
        + """\
mesh_peers:
  - name: carrier
    address: 198.51.100.9
    identity: b.sbc.example
    profile: strong
  - name: node-c
    address: 198.51.100.10
    identity: c.sbc.example
    profile: strong
dial_plans:
  - name: out
    routes:
      - prefix: "+44"
        candidates: [{trunk: node-c}]
"""
    )

    found = problems(text)

    assert found == [
        "sbc.yaml:25: mesh_peers[0].name: trunk 'carrier' exists: a mesh peer is "
        "a trunk of its name"
    ]


def test_null_encryption_is_refused():
    text = BASE.replace(
        "    psk: s3cret", "    psk: s3cret\n    esp_proposals: [{encryption: null}]"
    )

    assert any("esp_proposals[0].encryption" in p for p in problems(text))


def test_ipsec_listener_port_outside_the_media_range():
    text = BASE.replace("    ipsec: true", "    port: 20010\n    ipsec: true")
    text += "media:\n  address: 192.0.2.1\n  port_min: 20000\n  port_max: 20100\n"

    assert problems(text) == [
        "sbc.yaml:8: listeners[0].port: port 20010 is in the media port range "
        "20000-20100 on the same address"
    ]
    moved = text.replace("port: 20010", "port: 5060")
    assert parse_config(moved).listeners[0].port == 5060
