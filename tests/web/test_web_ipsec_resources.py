"""IPsec profiles and mesh peers through the API."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from web.db import SecretValue
from web.services.users import Role

API = "/api/v1"
PSK = "mesh-psk-Wd83kq"


def _profile(name="mesh", **changes):
    body = {
        "name": name,
        "ike_proposals": [
            {"encryption": "aes256gcm16", "prf": "prfsha384", "dh": "ecp384"}
        ],
        "esp_proposals": [{"encryption": "aes256gcm16"}],
        "auth": "psk",
        "psk": PSK,
        "mode": "tunnel",
    }
    body.update(changes)
    return body


def _peer(name="node-b", address="192.0.2.20", profile="mesh"):
    return {
        "name": name,
        "address": address,
        "identity": "b.sbc.example",
        "profile": profile,
        "sip_address": "10.99.0.2",
        "inner_networks": ["10.99.0.0/24"],
    }


@pytest.fixture
def admin(role_headers):
    return role_headers[Role.ADMIN]


def test_ipsec_profile_and_peer_crud(client, admin):
    created = client.post(f"{API}/ipsec-profiles", json=_profile(), headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["document"]["psk_set"] is True
    peer = client.post(f"{API}/mesh-peers", json=_peer(), headers=admin)
    assert peer.status_code == 201, peer.text
    body = _profile(dpd={"delay": 10, "action": "clear"})
    del body["psk"]
    updated = client.put(f"{API}/ipsec-profiles/mesh", json=body, headers=admin)
    assert updated.status_code == 200, updated.text
    assert updated.json()["document"]["dpd"]["delay"] == 10
    assert updated.json()["document"]["psk_set"] is True
    assert client.delete(f"{API}/mesh-peers/node-b", headers=admin).status_code == 204
    assert client.delete(f"{API}/ipsec-profiles/mesh", headers=admin).status_code == 204


def test_ipsec_profile_psk_sealed_never_returned(client, role_headers, state):
    admin = role_headers[Role.ADMIN]
    texts = [client.post(f"{API}/ipsec-profiles", json=_profile(), headers=admin).text]
    for role in Role:
        texts.append(
            client.get(f"{API}/ipsec-profiles/mesh", headers=role_headers[role]).text
        )
        texts.append(client.get(f"{API}/audit", headers=role_headers[role]).text)
    assert PSK not in "".join(texts)
    with state.sessions() as session:
        documents = str(
            session.execute(text("SELECT document FROM config_objects")).all()
        )
        sealed = session.scalars(select(SecretValue)).one()
    assert PSK not in documents
    assert sealed.path == "psk" and PSK.encode() not in sealed.ciphertext


@pytest.mark.parametrize(
    ("changes", "loc", "fragment"),
    [
        ({"psk": None}, ["body"], "auth psk needs psk"),
        ({"ike_proposals": []}, ["body", "ike_proposals"], "at least 1"),
        (
            {"esp_proposals": [{"encryption": "aes256"}]},
            ["body", "esp_proposals", 0],
            "needs an integrity",
        ),
        (
            {"ike_proposals": [{"encryption": "aes128gcm16", "integrity": "sha256"}]},
            ["body", "ike_proposals", 0],
            "takes no integrity",
        ),
        ({"mode": "bridge"}, ["body", "mode"], "'tunnel' or 'transport'"),
        ({"dh": "ecp256"}, ["body", "dh"], "Extra inputs"),
    ],
)
def test_ipsec_profile_invalid_422(client, admin, changes, loc, fragment):
    answer = client.post(
        f"{API}/ipsec-profiles", json=_profile(**changes), headers=admin
    )
    assert answer.status_code == 422
    problem = answer.json()["detail"][0]
    assert problem["loc"] == loc
    assert fragment in problem["msg"]
    assert PSK not in answer.text


def test_mesh_peer_unknown_profile_422(client, admin):
    answer = client.post(
        f"{API}/mesh-peers", json=_peer(profile="ghost"), headers=admin
    )
    assert answer.status_code == 422
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["mesh_peers", "node-b", "profile"]
    assert problem["msg"] == "unknown IPsec profile 'ghost'"


def test_mesh_peer_tunnel_needs_inner_networks_422(client, admin):
    client.post(f"{API}/ipsec-profiles", json=_profile(), headers=admin)
    body = {**_peer(), "inner_networks": []}
    answer = client.post(f"{API}/mesh-peers", json=body, headers=admin)
    assert answer.status_code == 422
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["mesh_peers", "node-b", "inner_networks"]


def test_ipsec_profile_mode_change_checked_against_peers_422(client, admin):
    client.post(f"{API}/ipsec-profiles", json=_profile(), headers=admin)
    client.post(f"{API}/mesh-peers", json=_peer(), headers=admin)
    body = _profile(mode="transport")
    answer = client.put(f"{API}/ipsec-profiles/mesh", json=body, headers=admin)
    assert answer.status_code == 422
    locs = [problem["loc"] for problem in answer.json()["detail"]]
    assert ["mesh_peers", "node-b", "inner_networks"] in locs


def test_mesh_peer_duplicate_address_422(client, admin):
    client.post(f"{API}/ipsec-profiles", json=_profile(), headers=admin)
    client.post(f"{API}/mesh-peers", json=_peer(), headers=admin)
    answer = client.post(f"{API}/mesh-peers", json=_peer("node-c"), headers=admin)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["mesh_peers", "node-c", "address"]


def test_ipsec_profile_in_use_not_deletable(client, admin):
    client.post(f"{API}/ipsec-profiles", json=_profile(), headers=admin)
    client.post(f"{API}/mesh-peers", json=_peer(), headers=admin)
    answer = client.delete(f"{API}/ipsec-profiles/mesh", headers=admin)
    assert answer.status_code == 422
    assert client.get(f"{API}/ipsec-profiles/mesh", headers=admin).status_code == 200


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER])
def test_ipsec_profile_writes_refused_for_role(client, role_headers, role):
    headers = role_headers[role]
    assert (
        client.post(
            f"{API}/ipsec-profiles", json=_profile(), headers=headers
        ).status_code
        == 403
    )
    assert client.get(f"{API}/ipsec-profiles", headers=headers).status_code == 200
