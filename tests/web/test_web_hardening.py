"""The API's defences, resource by resource, with every role.

Each resource is created, read, replaced and deleted by an admin and refused
to the operator and viewer; refusals leave no audit entry. Bad bodies get
422 naming the field. Every secret the test sets (digest and outbound
passwords, a PSK, a private key, user passwords) is looked for in every
answer of every GET operation of the OpenAPI document and of every write.
"""

from __future__ import annotations

import datetime
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from web.app import create_app
from web.services.users import Role

API = "/api/v1"
DIGEST_PASSWORD = "digest-secret-Hq38vL"
OUTBOUND_PASSWORD = "outbound-secret-Pz71wM"
PSK = "psk-secret-Xr55nB"
NEW_PASSWORD = "user-password-Jt62kD"
CHANGED_PASSWORD = "user-password-Cv19sQ"


def _certificate_and_key() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-a.sbc.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, private


CERTIFICATE, PRIVATE_KEY = _certificate_and_key()
# The base64 of the private scalar (DER bytes 36-66 of a PKCS#8 P-256 key;
# the rest is ASN.1 framing and the public key, which the certificate shows):
# found even if a response re-wrapped the PEM lines.
KEY_BODY = "".join(PRIVATE_KEY.strip().splitlines()[1:-1])
SECRETS = (DIGEST_PASSWORD, OUTBOUND_PASSWORD, PSK, KEY_BODY[48:88])


def _listener(name: str) -> dict:
    return {"name": name, "transport": "udp", "address": "127.0.0.1", "port": 5070}


def _trunk(name: str) -> dict:
    return {
        "name": name,
        "kind": "carrier",
        "listeners": ["edge"],
        "targets": [{"host": "192.0.2.10", "port": 5060, "transport": "udp"}],
        "inbound": {
            "digest": {
                "username": "pbx",
                "password": DIGEST_PASSWORD,
                "realm": "sbc.example",
            }
        },
        "outbound_auth": {"username": "acct", "password": OUTBOUND_PASSWORD},
    }


def _plan(name: str) -> dict:
    return {"name": name, "routes": [{"prefix": "+44", "candidates": [{"trunk": "carrier"}]}]}  # fmt: skip


def _profile(name: str) -> dict:
    return {
        "name": name,
        "ike_proposals": [{"encryption": "aes256gcm16", "prf": "prfsha384", "dh": "ecp384"}],
        "esp_proposals": [{"encryption": "aes256gcm16"}],
        "auth": "psk",
        "psk": PSK,
        "mode": "tunnel",
    }  # fmt: skip


def _certificate_profile(name: str) -> dict:
    return {
        **_profile(name),
        "auth": "certificate",
        "psk": None,
        "certificate": CERTIFICATE,
        "private_key": PRIVATE_KEY,
        "ca_certificates": [CERTIFICATE],
    }


def _peer(name: str) -> dict:
    return {
        "name": name,
        "address": "192.0.2.20",
        "identity": "b.sbc.example",
        "profile": "mesh",
        "sip_address": "10.99.0.2",
        "inner_networks": ["10.99.0.0/24"],
    }


BUILDERS = {
    "listeners": _listener,
    "trunks": _trunk,
    "dial-plans": _plan,
    "ipsec-profiles": _profile,
    "mesh-peers": _peer,
}
KINDS = {
    "listeners": "listener",
    "trunks": "trunk",
    "dial-plans": "dial_plan",
    "ipsec-profiles": "ipsec_profile",
    "mesh-peers": "mesh_peer",
}


def _seed(client, admin) -> None:
    """One object of each kind, each referring to the one before."""
    for segment, name in (
        ("listeners", "edge"),
        ("trunks", "carrier"),
        ("dial-plans", "out"),
        ("ipsec-profiles", "mesh"),
        ("mesh-peers", "node-b"),
    ):
        answer = client.post(
            f"{API}/{segment}", json=BUILDERS[segment](name), headers=admin
        )
        assert answer.status_code == 201, answer.text
    profile = _certificate_profile("signed")
    answer = client.post(f"{API}/ipsec-profiles", json=profile, headers=admin)
    assert answer.status_code == 201, answer.text


def _changed(segment: str, body: dict) -> dict:
    changed = dict(body)
    if segment == "listeners":
        changed["port"] = 5080
    elif segment == "dial-plans":
        changed["routes"] = [{"prefix": "+49", "candidates": [{"trunk": "carrier"}]}]
    elif segment == "mesh-peers":
        changed["identity"] = "c.sbc.example"
    else:
        changed["targets" if segment == "trunks" else "mode"] = (
            [{"host": "192.0.2.11", "port": 5060, "transport": "udp"}]
            if segment == "trunks"
            else "transport"
        )
    return changed


def _audit(client, admin, kind: str, name: str) -> list[tuple[str, str]]:
    entries = client.get(
        f"{API}/audit", params={"kind": kind, "name": name}, headers=admin
    ).json()["items"]
    return [(entry["action"], entry["actor"]) for entry in reversed(entries)]


@pytest.mark.parametrize("segment", list(BUILDERS))
def test_each_role_on_each_resource(client, role_headers, segment):
    admin = role_headers[Role.ADMIN]
    _seed(client, admin)
    body = BUILDERS[segment]("second")
    # Unique where the cross-checks ask for it: a port, a digest user, an address.
    if segment == "listeners":
        body["port"] = 5090
    elif segment == "trunks":
        body["inbound"]["digest"]["username"] = "pbx-2"
    elif segment == "mesh-peers":
        body["address"] = "192.0.2.21"
    item = f"{API}/{segment}/second"

    for role in (Role.VIEWER, Role.OPERATOR):
        headers = role_headers[role]
        refused = [
            client.post(f"{API}/{segment}", json=body, headers=headers),
            client.put(f"{API}/{segment}/{'edge'}", json=body, headers=headers),
            client.delete(f"{API}/{segment}/second", headers=headers),
        ]
        assert [answer.status_code for answer in refused] == [403, 403, 403], role
        assert client.get(f"{API}/{segment}", headers=headers).status_code == 200

    created = client.post(f"{API}/{segment}", json=body, headers=admin)
    assert created.status_code == 201, created.text
    for role in Role:
        assert client.get(item, headers=role_headers[role]).json()["name"] == "second"
    replaced = client.put(item, json=_changed(segment, body), headers=admin)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["revision"] == 2
    assert client.delete(item, headers=admin).status_code == 204
    assert client.get(item, headers=admin).status_code == 404

    # Only the admin's three changes were audited, in order.
    assert _audit(client, admin, KINDS[segment], "second") == [
        ("create", "admin"),
        ("update", "admin"),
        ("delete", "admin"),
    ]


@pytest.mark.parametrize(
    ("segment", "change", "field"),
    [
        ("listeners", {"port": 70000}, "port"),
        ("listeners", {"transport": "sctp"}, "transport"),
        ("trunks", {"targets": [{"host": "192.0.2.10", "port": 0}]}, "port"),
        ("trunks", {"listeners": ["ghost"]}, "listeners"),
        ("dial-plans", {"routes": [{"prefix": "+44", "candidates": [{"trunk": "ghost"}]}]}, "routes"),
        ("ipsec-profiles", {"mode": "sideways"}, "mode"),
        ("ipsec-profiles", {"auth": "certificate"}, "auth"),
        ("mesh-peers", {"address": "not-an-address"}, "address"),
        ("mesh-peers", {"profile": "ghost"}, "profile"),
    ],
)  # fmt: skip
def test_invalid_body_answers_422_naming_the_field(
    client, role_headers, segment, change, field
):
    admin = role_headers[Role.ADMIN]
    _seed(client, admin)
    body = {**BUILDERS[segment]("bad"), **change}

    answer = client.post(f"{API}/{segment}", json=body, headers=admin)

    assert answer.status_code == 422, answer.text
    # A field's own problem is located at it; a rule across fields (auth
    # needs certificate and private_key) at the object, typed by the field.
    problems = answer.json()["detail"]
    assert any(field in p["loc"] or p["type"] == field for p in problems), problems
    for secret in SECRETS:
        assert secret not in answer.text
    assert _audit(client, admin, KINDS[segment], "bad") == []


def _concrete(path: str) -> str:
    names = {
        "listeners": "edge",
        "trunks": "carrier",
        "dial-plans": "out",
        "ipsec-profiles": "signed",
        "mesh-peers": "node-b",
        "users": "operator",
    }
    parts = path.split("/")
    segment = parts[3] if len(parts) > 3 else ""
    return re.sub(r"\{[a-z_]+\}", names.get(segment, "1"), path)


def test_no_secret_in_any_answer(client, role_headers, state):
    admin = role_headers[Role.ADMIN]
    answers = []

    # Set every kind of secret the API accepts, keeping every answer.
    _seed(client, admin)
    for segment, name in (("trunks", "carrier"), ("ipsec-profiles", "signed")):
        path = f"{API}/{segment}/{name}"
        document = client.get(path, headers=admin).json()["document"]
        answers.append(client.put(path, json=document, headers=admin))
    user = {"username": "late", "password": NEW_PASSWORD, "role": "viewer"}
    answers.append(client.post(f"{API}/users", json=user, headers=admin))
    change = {"password": CHANGED_PASSWORD}
    answers.append(client.patch(f"{API}/users/late", json=change, headers=admin))
    answers.append(client.post(f"{API}/auth/login", json={**user, "password": "wrong"}))
    login = {"username": "late", "password": CHANGED_PASSWORD}
    session_token = client.post(f"{API}/auth/login", json=login).json()["access_token"]
    api_token = client.post(f"{API}/tokens", json={"label": "ci"}, headers=admin)
    api_token_value = api_token.json()["token"]
    bad_profile = {**_profile("broken"), "mode": "sideways"}
    answers.append(
        client.post(f"{API}/ipsec-profiles", json=bad_profile, headers=admin)
    )

    # Read everything there is to read, as each role.
    document = create_app(state).openapi()
    for path, operations in document["paths"].items():
        if "get" in operations:
            for role in Role:
                answers.append(client.get(_concrete(path), headers=role_headers[role]))
    assert len(answers) > 60

    for answer in answers:
        # 503 is an answer (no node runs in this test); 500 would be a crash.
        assert answer.status_code != 500, (answer.request.url, answer.text)
        for secret in (*SECRETS, NEW_PASSWORD, CHANGED_PASSWORD):
            assert secret not in answer.text, (answer.request.url, secret)
        assert session_token not in answer.text
        assert api_token_value not in answer.text


def test_login_limited_per_client_address(client, role_headers, passwords, state):
    # Failures spread over many usernames still count against one address.
    for index in range(state.limiter.max_failures):
        wrong = {"username": f"guess-{index}", "password": "not-the-password"}
        assert client.post(f"{API}/auth/login", json=wrong).status_code == 401

    right = {"username": "viewer", "password": passwords[Role.VIEWER]}
    limited = client.post(f"{API}/auth/login", json=right)

    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert "access_token" not in limited.text


def test_login_audited_and_failed_login_not(client, role_headers, passwords):
    admin = role_headers[Role.ADMIN]
    client.post(
        f"{API}/auth/login", json={"username": "viewer", "password": "no-no-no-no"}
    )
    right = {"username": "viewer", "password": passwords[Role.VIEWER]}
    assert client.post(f"{API}/auth/login", json=right).status_code == 200
    assert _audit(client, admin, "user", "viewer")[-1] == ("login", "viewer")
    logins = [e for e in _audit(client, admin, "user", "viewer") if e[0] == "login"]
    assert len(logins) == 1
