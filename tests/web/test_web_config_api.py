"""Configuration resources through the API: CRUD, validation, secrets, audit."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select, text

from sbc.config import REDACTED
from web.db import ConfigObject, SecretValue
from web.services import config
from web.services.users import Role

API = "/api/v1"
DIGEST_PASSWORD = "digest-pw-Zq81"
OUTBOUND_PASSWORD = "outbound-pw-Kx27"


def _listener(name="edge", port=5060, transport="udp"):
    return {"name": name, "transport": transport, "address": "127.0.0.1", "port": port}


def _trunk(name="carrier", listeners=("edge",)):
    return {
        "name": name,
        "kind": "carrier",
        "listeners": list(listeners),
        "targets": [{"host": "192.0.2.10", "port": 5060, "transport": "udp"}],
        "inbound": {
            "digest": {
                "username": "pbx",
                "password": DIGEST_PASSWORD,
                "realm": "sbc.example",
            }
        },
        "outbound_auth": {"username": "acct", "password": OUTBOUND_PASSWORD},
        "numbers": {"inbound": [{"match": r"0(\d+)", "replace": r"+44\1"}]},
        "headers": {"egress": [{"action": "add", "name": "X-Site", "value": "a"}]},
    }


def _plan(name="out", trunk="carrier"):
    return {
        "name": name,
        "routes": [{"prefix": "+44", "candidates": [{"trunk": trunk}]}],
    }


@pytest.fixture
def admin(role_headers):
    return role_headers[Role.ADMIN]


def _seed(client, admin):
    assert (
        client.post(f"{API}/listeners", json=_listener(), headers=admin).status_code
        == 201
    )
    assert client.post(f"{API}/trunks", json=_trunk(), headers=admin).status_code == 201


@pytest.mark.parametrize(
    ("segment", "body"),
    [("listeners", _listener()), ("trunks", _trunk()), ("dial-plans", _plan())],
)
def test_resource_crud_admin(client, admin, segment, body):
    if segment != "listeners":
        client.post(f"{API}/listeners", json=_listener(), headers=admin)
    if segment == "dial-plans":
        client.post(f"{API}/trunks", json=_trunk(), headers=admin)
    name = body["name"]
    created = client.post(f"{API}/{segment}", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["revision"] == 1
    assert created.json()["state"] == "pending"
    listed = client.get(f"{API}/{segment}", headers=admin).json()
    assert [item["name"] for item in listed] == [name]
    changed = dict(body)
    if segment == "listeners":
        changed["port"] = 5070
    elif segment == "trunks":
        changed["targets"] = [{"host": "192.0.2.11", "transport": "udp"}]
    else:
        changed["routes"] = []
    updated = client.put(f"{API}/{segment}/{name}", json=changed, headers=admin)
    assert updated.status_code == 200, updated.text
    assert updated.json()["revision"] == 2
    got = client.get(f"{API}/{segment}/{name}", headers=admin).json()
    assert got["document"] == updated.json()["document"]
    assert client.delete(f"{API}/{segment}/{name}", headers=admin).status_code == 204
    assert client.get(f"{API}/{segment}/{name}", headers=admin).status_code == 404


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER])
def test_resource_writes_refused_for_role(client, role_headers, role):
    headers = role_headers[role]
    _seed(client, role_headers[Role.ADMIN])
    assert client.get(f"{API}/trunks", headers=headers).status_code == 200
    assert (
        client.post(
            f"{API}/listeners", json=_listener("b", 5070), headers=headers
        ).status_code
        == 403
    )
    assert (
        client.put(
            f"{API}/listeners/edge", json=_listener(port=5071), headers=headers
        ).status_code
        == 403
    )
    assert client.delete(f"{API}/trunks/carrier", headers=headers).status_code == 403
    assert (
        client.get(f"{API}/listeners/edge", headers=headers).json()["document"]["port"]
        == 5060
    )


def test_resource_unauthenticated_refused(client):
    answer = client.get(f"{API}/trunks")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    bad = client.get(f"{API}/trunks", headers={"Authorization": "Bearer sbc_nope"})
    assert bad.status_code == 401


def test_validation_422_names_field_and_problem(client, admin):
    answer = client.post(f"{API}/listeners", json=_listener(port=70000), headers=admin)
    assert answer.status_code == 422
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["body", "port"]
    assert "65535" in problem["msg"]


def test_validation_422_unknown_field_on_update(client, admin):
    _seed(client, admin)
    body = {**_listener(), "prot": 5061}
    answer = client.put(f"{API}/listeners/edge", json=body, headers=admin)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "prot"]


def test_validation_422_cross_reference_unknown_listener(client, admin):
    answer = client.post(
        f"{API}/trunks", json=_trunk(listeners=["ghost"]), headers=admin
    )
    assert answer.status_code == 422
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["trunks", "carrier", "listeners", 0]
    assert problem["msg"] == "unknown listener 'ghost'"
    assert client.get(f"{API}/trunks", headers=admin).json() == []


def test_validation_422_socket_clash_between_listeners(client, admin):
    _seed(client, admin)
    answer = client.post(f"{API}/listeners", json=_listener("twin"), headers=admin)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["listeners", "twin", "port"]


def test_delete_referenced_listener_refused(client, admin):
    _seed(client, admin)
    answer = client.delete(f"{API}/listeners/edge", headers=admin)
    assert answer.status_code == 422
    assert "unknown listener 'edge'" in answer.json()["detail"][0]["msg"]
    assert client.get(f"{API}/listeners/edge", headers=admin).status_code == 200


def test_create_duplicate_conflict(client, admin):
    _seed(client, admin)
    answer = client.post(f"{API}/listeners", json=_listener(), headers=admin)
    assert answer.status_code == 409


def test_update_rename_refused(client, admin):
    _seed(client, admin)
    answer = client.put(f"{API}/listeners/edge", json=_listener("other"), headers=admin)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "name"]


def test_secrets_never_in_responses_or_logs(client, role_headers, caplog):
    caplog.set_level(logging.DEBUG)
    admin = role_headers[Role.ADMIN]
    bodies = []
    bodies.append(client.post(f"{API}/listeners", json=_listener(), headers=admin).text)
    created = client.post(f"{API}/trunks", json=_trunk(), headers=admin)
    bodies.append(created.text)
    document = created.json()["document"]
    assert document["inbound"]["digest"]["password_set"] is True
    assert "password" not in document["inbound"]["digest"]
    assert document["outbound_auth"]["password_set"] is True
    bad = {**_trunk(), "oops": 1}
    bodies.append(client.put(f"{API}/trunks/carrier", json=bad, headers=admin).text)
    bad_digest = _trunk()
    bad_digest["inbound"]["digest"]["extra"] = "x"
    bodies.append(client.post(f"{API}/trunks", json=bad_digest, headers=admin).text)
    for role in Role:
        for path in ("/trunks", "/trunks/carrier", "/audit"):
            bodies.append(client.get(f"{API}{path}", headers=role_headers[role]).text)
    everything = "\n".join(bodies) + caplog.text
    assert DIGEST_PASSWORD not in everything
    assert OUTBOUND_PASSWORD not in everything


def test_secrets_encrypted_in_database(client, admin, state):
    _seed(client, admin)
    with state.sessions() as session:
        raw_documents = session.execute(text("SELECT document FROM config_objects"))
        documents = " ".join(str(row[0]) for row in raw_documents)
        sealed = session.scalars(select(SecretValue)).all()
        paths = sorted(secret.path for secret in sealed)
    assert DIGEST_PASSWORD not in documents and OUTBOUND_PASSWORD not in documents
    assert REDACTED in documents
    assert paths == ["inbound.digest.password", "outbound_auth.password"]
    for secret in sealed:
        assert secret.key_id == state.box.current
        assert DIGEST_PASSWORD.encode() not in secret.ciphertext
        assert OUTBOUND_PASSWORD.encode() not in secret.ciphertext
    with state.sessions() as session:
        stored = config.load_config(session, state.box)
    trunk = stored.trunk("carrier")
    assert trunk is not None and trunk.inbound.digest is not None
    assert trunk.inbound.digest.password.get_secret_value() == DIGEST_PASSWORD


def test_update_without_secret_keeps_it(client, admin, state):
    _seed(client, admin)
    body = _trunk()
    del body["inbound"]["digest"]["password"]
    body["outbound_auth"]["password"] = "new-outbound-pw"
    answer = client.put(f"{API}/trunks/carrier", json=body, headers=admin)
    assert answer.status_code == 200, answer.text
    with state.sessions() as session:
        trunk = config.load_config(session, state.box).trunk("carrier")
    assert trunk is not None and trunk.inbound.digest and trunk.outbound_auth
    assert trunk.inbound.digest.password.get_secret_value() == DIGEST_PASSWORD
    assert trunk.outbound_auth.password.get_secret_value() == "new-outbound-pw"


def test_audit_written_with_secrets_redacted(client, admin):
    _seed(client, admin)
    client.put(f"{API}/listeners/edge", json=_listener(port=5070), headers=admin)
    page = client.get(f"{API}/audit", params={"kind": "listener"}, headers=admin).json()
    assert page["total"] == 2
    update, create = page["items"]
    assert (update["action"], update["actor"], update["name"]) == (
        "update",
        "admin",
        "edge",
    )
    assert update["before"]["port"] == 5060 and update["after"]["port"] == 5070
    assert create["action"] == "create" and create["before"] is None
    trunk = client.get(f"{API}/audit", params={"kind": "trunk"}, headers=admin).json()
    after = trunk["items"][0]["after"]
    assert after["outbound_auth"] == {
        "username": "acct",
        "realm": None,
        "algorithms": ["SHA-256", "MD5"],
        "password_set": True,
    }


def test_audit_refused_change_leaves_no_entry(client, admin, state):
    client.post(f"{API}/trunks", json=_trunk(listeners=["ghost"]), headers=admin)
    page = client.get(f"{API}/audit", params={"kind": "trunk"}, headers=admin).json()
    assert page == {"total": 0, "items": []}
    with state.sessions() as session:
        assert session.scalars(select(ConfigObject)).all() == []


def test_audit_paging_and_filters(client, admin):
    for port in range(5100, 5107):
        client.post(f"{API}/listeners", json=_listener(f"l{port}", port), headers=admin)
    first = client.get(
        f"{API}/audit", params={"limit": 3, "kind": "listener"}, headers=admin
    ).json()
    second = client.get(
        f"{API}/audit",
        params={"limit": 3, "offset": 3, "kind": "listener"},
        headers=admin,
    ).json()
    assert first["total"] == second["total"] == 7
    names = [item["name"] for item in first["items"] + second["items"]]
    assert names == [f"l{port}" for port in range(5106, 5100, -1)]
    only = client.get(f"{API}/audit", params={"name": "l5102"}, headers=admin).json()
    assert [item["name"] for item in only["items"]] == ["l5102"]
    assert (
        client.get(f"{API}/audit", params={"limit": 0}, headers=admin).status_code
        == 422
    )


def test_concurrent_create_answers_409(client, admin, state):
    # A real unique-key clash, as when two nodes create the same user at once:
    # the row appears after the request's own check, before it writes.
    from datetime import UTC, datetime

    from sqlalchemy import event

    from web.db import User

    fired = []

    def clash(session, context, instances):
        if fired:
            return
        fired.append(True)
        with state.sessions.begin() as other:
            other.add(
                User(
                    username="racer",
                    password_hash="x",
                    role="viewer",
                    created_at=datetime.now(UTC),
                )
            )

    event.listen(state.sessions, "before_flush", clash)
    body = {"username": "racer", "password": "racer-password-1", "role": "viewer"}
    answer = client.post(f"{API}/users", json=body, headers=admin)
    event.remove(state.sessions, "before_flush", clash)
    assert fired and answer.status_code == 409
    assert "racer-password-1" not in answer.text
