"""From configuration to IKE connections: selectors, proposals, identities, mesh."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from ipsec.esp import Mode
from ipsec.ike.config import DpdAction
from ipsec.ike.connection import StartAction, parse_proposal, traffic_selector
from ipsec.ike.constants import (
    DhGroup,
    EncrId,
    EsnId,
    IdType,
    PrfId,
    ProtocolId,
    TransformType,
)
from sbc.config.ipsec import EspProposal, IkeProposal
from sbc.config.model import Config
from sbc.config.references import reference_problems
from sbc.secure.derive import (
    NodeSectionMissing,
    esp_proposal_text,
    ike_proposal_text,
    mesh_trunks,
    protected_connections,
    with_mesh,
)

NODE = {"node": "a", "address": "192.0.2.1", "identity": "a.sbc.example"}


def config(**changes) -> Config:
    document = {
        "ipsec": NODE,
        "listeners": [
            {"name": "sec", "transport": "udp", "address": "192.0.2.1", "ipsec": True}
        ],
        "ipsec_profiles": [{"name": "p", "psk": "s3cret"}],
        "trunks": [
            {
                "name": "carrier",
                "kind": "carrier",
                "listeners": ["sec"],
                "targets": [{"host": "198.51.100.7"}, {"host": "198.51.100.8"}],
                "ipsec_profile": "p",
            }
        ],
    }
    document.update(changes)
    parsed = Config.model_validate(document)
    assert reference_problems(parsed) == []
    return parsed


def transforms(proposal):
    return {
        (t.transform_type, t.transform_id, t.key_length) for t in proposal.transforms
    }


def test_transport_mode_one_connection_per_target_host_to_host():
    first, second = protected_connections(config())

    assert [c.peer for c in (first, second)] == [
        ip_address("198.51.100.7"),
        ip_address("198.51.100.8"),
    ]
    definition = first.definition
    assert definition.name == "carrier@198.51.100.7"
    assert definition.local_address == ip_address("192.0.2.1")
    assert definition.remote_address == ip_address("198.51.100.7")
    assert definition.child.mode is Mode.TRANSPORT
    assert definition.child.local_ts == (traffic_selector("192.0.2.1/32"),)
    assert definition.child.remote_ts == (traffic_selector("198.51.100.7/32"),)
    assert definition.encap is True
    assert definition.start_action is StartAction.START
    assert (definition.remote_port, definition.remote_nat_t_port) == (500, 4500)


def test_tunnel_mode_listener_and_media_address_to_peer_networks():
    parsed = config(
        listeners=[
            {
                "name": "sec",
                "transport": "udp",
                "address": "10.1.0.1",
                "media_address": "10.1.0.2",
                "ipsec": True,
            }
        ],
        ipsec_profiles=[{"name": "p", "psk": "s3cret", "mode": "tunnel"}],
        trunks=[
            {
                "name": "carrier",
                "kind": "carrier",
                "listeners": ["sec"],
                "targets": [{"host": "10.2.0.5"}, {"host": "10.3.0.5"}],
                "ipsec_profile": "p",
                "ipsec_gateway": "198.51.100.1",
                "ipsec_networks": ["10.2.0.0/24", "10.3.0.0/16"],
            }
        ],
    )

    [connection] = protected_connections(parsed)

    child = connection.definition.child
    assert connection.peer == ip_address("198.51.100.1")
    assert child.mode is Mode.TUNNEL
    assert child.local_ts == (
        traffic_selector("10.1.0.1/32"),
        traffic_selector("10.1.0.2/32"),
    )
    assert child.remote_ts == (
        traffic_selector("10.2.0.0/24"),
        traffic_selector("10.3.0.0/16"),
    )


def test_default_proposals_follow_rfc_8247_and_8221():
    definition = protected_connections(config())[0].definition

    x25519, ecp256 = definition.ike_proposals
    assert transforms(x25519) == {
        (TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 128),
        (TransformType.PRF, PrfId.PRF_HMAC_SHA2_256, None),
        (TransformType.DH, DhGroup.CURVE25519, None),
    }
    assert (TransformType.DH, DhGroup.ECP_256, None) in transforms(ecp256)
    [esp] = definition.child.esp_proposals
    assert transforms(esp) == {
        (TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 128),
        (TransformType.ESN, EsnId.ESN, None),
    }


@pytest.mark.parametrize(
    ("proposal", "text"),
    [
        (IkeProposal(encryption="aes256gcm16", prf="prfsha384", dh="ecp384"),
         "aes256gcm16-prfsha384-ecp384"),
        (IkeProposal(encryption="aes128", integrity="sha256", dh="modp2048"),
         "aes128-sha256-prfsha256-modp2048"),
        (EspProposal(encryption="aes256", integrity="sha512", esn=False),
         "aes256-sha512-noesn"),
        (EspProposal(encryption="chacha20poly1305", dh="curve25519"),
         "chacha20poly1305-curve25519-esn"),
    ],
)  # fmt: skip
def test_proposal_texts_parse_as_strongswan_keywords(proposal, text):
    render = (
        ike_proposal_text if isinstance(proposal, IkeProposal) else esp_proposal_text
    )
    protocol = ProtocolId.IKE if isinstance(proposal, IkeProposal) else ProtocolId.ESP

    assert render(proposal) == text
    assert parse_proposal(text, protocol).transforms


def test_identities_default_to_addresses_or_follow_their_type():
    parsed = config(
        ipsec={"node": "a", "address": "192.0.2.1"},
        trunks=[
            {
                "name": "carrier",
                "kind": "carrier",
                "listeners": ["sec"],
                "targets": [{"host": "198.51.100.7"}],
                "ipsec_profile": "p",
                "ipsec_identity_type": "dn",
                "ipsec_identity": "CN=carrier,O=Example",
            }
        ],
    )

    definition = protected_connections(parsed)[0].definition

    assert definition.local_id.id_type is IdType.ID_IPV4_ADDR
    assert definition.local_id.data == bytes([192, 0, 2, 1])
    assert definition.remote_id.id_type is IdType.ID_DER_ASN1_DN
    assert b"carrier" in definition.remote_id.data


def test_profile_timers_reach_the_connection():
    parsed = config(
        ipsec_profiles=[
            {
                "name": "p",
                "psk": "s3cret",
                "start_action": "none",
                "lifetimes": {"ike_seconds": 7200, "child_seconds": 1200},
                "dpd": {"delay": 10, "action": "clear"},
                "retransmission": {"timeout": 1, "tries": 3},
            }
        ]
    )

    definition = protected_connections(parsed)[0].definition

    assert definition.start_action is StartAction.NONE
    assert definition.ike_rekey_time == 7200
    assert definition.child.rekey_time == 1200
    assert definition.rand_time == 120
    assert (definition.dpd_delay, definition.dpd_action) == (10, DpdAction.CLEAR)
    assert (definition.retransmit_timeout, definition.retransmit_tries) == (1, 3)
    assert definition.psk is not None and definition.psk.secret == b"s3cret"


def test_protected_trunks_need_the_node_section():
    parsed = config(ipsec=None)

    with pytest.raises(NodeSectionMissing):
        protected_connections(parsed)


def mesh_config(address: str, peer_address: str, mode: str = "transport") -> Config:
    tunnel = mode == "tunnel"
    inner = "10.9.0.1" if address < peer_address else "10.9.1.1"
    peer_inner = "10.9.1.1" if address < peer_address else "10.9.0.1"
    return config(
        ipsec={**NODE, "address": address, "mesh_listener": "mesh"},
        listeners=[
            {
                "name": "mesh",
                "transport": "udp",
                "address": inner if tunnel else address,
                "ipsec": True,
            }
        ],
        ipsec_profiles=[{"name": "p", "psk": "s3cret", "mode": mode}],
        trunks=[],
        mesh_peers=[
            {
                "name": "node-b",
                "address": peer_address,
                "identity": "b.sbc.example",
                "profile": "p",
                **(
                    {"sip_address": peer_inner, "inner_networks": [f"{peer_inner}/32"]}
                    if tunnel
                    else {}
                ),
            }
        ],
        dial_plans=[
            {
                "name": "out",
                "routes": [{"prefix": "+44", "candidates": [{"trunk": "node-b"}]}],
            }
        ],
    )


def test_mesh_peer_becomes_a_protected_peer_sbc_trunk():
    parsed = mesh_config("192.0.2.1", "192.0.2.2")

    [trunk] = mesh_trunks(parsed)

    assert trunk.name == "node-b" and trunk.kind == "peer-sbc"
    assert trunk.listeners == ["mesh"] and trunk.ipsec_profile == "p"
    assert [(t.host, t.port, t.transport) for t in trunk.targets] == [
        ("192.0.2.2", 5060, "udp")
    ]
    assert [str(n) for n in trunk.inbound.allow] == ["192.0.2.2/32"]
    # What the engines run on: the derived trunk passes the trunk checks.
    expanded = with_mesh(parsed).model_copy(update={"mesh_peers": []})
    assert reference_problems(expanded) == []
    [connection] = protected_connections(parsed)
    assert connection.definition.remote_id.data == b"b.sbc.example"


def test_mesh_lower_address_initiates_the_other_waits():
    low = protected_connections(mesh_config("192.0.2.1", "192.0.2.2"))[0]
    high = protected_connections(mesh_config("192.0.2.2", "192.0.2.1"))[0]

    assert low.definition.start_action is StartAction.START
    assert high.definition.start_action is StartAction.NONE


def test_mesh_tunnel_mode_selectors_are_the_inner_addresses():
    parsed = mesh_config("192.0.2.1", "192.0.2.2", mode="tunnel")

    [connection] = protected_connections(parsed)

    child = connection.definition.child
    assert connection.peer == ip_address("192.0.2.2")
    assert child.local_ts == (traffic_selector("10.9.0.1/32"),)
    assert child.remote_ts == (traffic_selector("10.9.1.1/32"),)
