"""Digest authentication: RFC known answers, the verifier, and engine flows.

The engine flows check the SBC's digests with `expected_response`, a few
lines of hashlib written from RFC 7616 §3.4.1, not with sbc.sip.digest.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from b2bua_harness import ANSWER, Lab, lab_config

from sbc.cdr import Disposition
from sbc.sip.digest import (
    ClientCredentials,
    DigestInput,
    DigestVerifier,
    NonceIssuer,
    Unauthorized,
    Verdict,
    answer_challenge,
    choose_challenge,
    compute_response,
)
from sbc.sip.headers import parse_challenge, parse_credentials

RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "qop": "auth",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


def expected_response(algorithm, username, realm, password, method, uri, params):
    """RFC 7616 §3.4.1 for qop=auth, independent of the code under test."""
    name = "md5" if algorithm.upper().startswith("MD5") else "sha256"

    def h(text):
        return hashlib.new(name, text.encode()).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{params['nonce']}:{params['cnonce']}")
    ha2 = h(f"{method}:{uri}")
    tail = f"{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}"
    return h(f"{ha1}:{tail}")


# -- Known answers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_response_rfc7616_example(algorithm, response):
    assert compute_response(DigestInput(algorithm=algorithm, **RFC7616)) == response


def test_response_rfc2617_example():
    values = DigestInput(
        "MD5",
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        "GET",
        "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "auth",
        "00000001",
        "0a4f113b",
    )
    assert compute_response(values) == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_response_sess_variant_matches_formula(algorithm):
    values = DigestInput(algorithm=algorithm, **RFC7616)
    expected = expected_response(
        algorithm,
        RFC7616["username"],
        RFC7616["realm"],
        RFC7616["password"],
        "GET",
        RFC7616["uri"],
        RFC7616,
    )
    assert compute_response(values) == expected


def test_digest_input_repr_hides_password():
    assert "Circle" not in repr(DigestInput(algorithm="MD5", **RFC7616))
    assert "secret" not in repr(ClientCredentials("u", "secret"))


# -- Verifier ------------------------------------------------------------------


def _verifier(seed=1, lifetime=300.0):
    rng = random.Random(seed)
    return DigestVerifier(NonceIssuer(rng.randbytes, lifetime=lifetime))


def _answer(verifier, now, *, password="pw", algorithm="SHA-256", nc=1):
    challenge = next(
        parse_challenge(value)
        for value in verifier.challenge("sbc.example", now).challenges
        if f"algorithm={algorithm}" in value
    )
    value = answer_challenge(
        challenge,
        ClientCredentials("alice", password),
        method="INVITE",
        uri="sip:+15550100@192.0.2.1",
        cnonce="0a4f113b",
        nc=nc,
    )
    return parse_credentials(value)


def _verify(verifier, credentials, now, password="pw"):
    return verifier.verify(
        credentials,
        method="INVITE",
        request_uri="sip:+15550100@192.0.2.1",
        realm="sbc.example",
        password=password,
        now=now,
    )


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_verify_accepts_right_password(algorithm):
    verifier = _verifier()
    credentials = _answer(verifier, 10.0, algorithm=algorithm)
    assert _verify(verifier, credentials, 11.0) is Verdict.ACCEPTED


def test_verify_rejects_wrong_password():
    verifier = _verifier()
    credentials = _answer(verifier, 10.0, password="guess")
    assert _verify(verifier, credentials, 11.0) is Verdict.REJECTED


def test_verify_expired_nonce_is_stale():
    verifier = _verifier(lifetime=60.0)
    credentials = _answer(verifier, 10.0)
    assert _verify(verifier, credentials, 71.0) is Verdict.STALE


def test_verify_nonce_survives_one_rotation_only():
    verifier = _verifier(lifetime=60.0)
    early = _answer(verifier, 10.0)
    verifier.challenge("sbc.example", 80.0)  # rotates the secret once
    late = _answer(verifier, 80.0)
    assert _verify(verifier, late, 81.0) is Verdict.ACCEPTED
    assert _verify(verifier, early, 81.0) is Verdict.STALE


def test_verify_reused_nonce_count_is_stale():
    verifier = _verifier()
    first = _answer(verifier, 10.0)
    assert _verify(verifier, first, 11.0) is Verdict.ACCEPTED
    assert _verify(verifier, first, 12.0) is Verdict.STALE


def test_verify_forged_nonce_is_not_accepted():
    verifier = _verifier()
    forged = parse_challenge(
        'Digest realm="sbc.example", nonce="00ff", algorithm=MD5, qop="auth"'
    )
    value = answer_challenge(
        forged,
        ClientCredentials("alice", "pw"),
        method="INVITE",
        uri="sip:+15550100@192.0.2.1",
        cnonce="aa",
    )
    assert _verify(verifier, parse_credentials(value), 11.0) is Verdict.STALE


@pytest.mark.parametrize(
    ("name", "value"),
    [("uri", "sip:other@192.0.2.1"), ("realm", "evil.example"), ("qop", "auth-int")],
)
def test_verify_credentials_not_for_this_request_rejected(name, value):
    verifier = _verifier()
    credentials = _answer(verifier, 10.0)
    credentials.params[name] = value
    assert _verify(verifier, credentials, 11.0) is Verdict.REJECTED


def test_challenge_offers_sha256_before_md5():
    challenge = _verifier().challenge("sbc.example", 1.0)
    assert isinstance(challenge, Unauthorized) and challenge.status_code == 401
    algorithms = [parse_challenge(v).get("algorithm") for v in challenge.challenges]
    assert algorithms == ["SHA-256", "MD5"]


def test_choose_challenge_follows_preference_and_realm():
    md5 = parse_challenge('Digest realm="a", nonce="n1", algorithm=MD5, qop="auth"')
    sha = parse_challenge('Digest realm="a", nonce="n2", algorithm=SHA-256')
    other = parse_challenge('Digest realm="b", nonce="n3", algorithm=SHA-256')
    assert choose_challenge([md5, sha], ClientCredentials("u", "p")) is sha
    only_md5 = ClientCredentials("u", "p", algorithms=("MD5",))
    assert choose_challenge([sha, md5], only_md5) is md5
    assert choose_challenge([other], ClientCredentials("u", "p", realm="a")) is None


# -- Inbound challenge through the engine --------------------------------------

ACCOUNT = {"username": "carrier1", "password": "s3cret-pw", "realm": "sbc.example"}


def _inbound_lab(**carrier):
    inbound = {"allow": ["192.0.2.10"], "digest": ACCOUNT}
    return Lab(config=lab_config({"carrier": {"inbound": inbound, **carrier}}))


def _retry_with(lab, first, challenge_value, *, password, cseq=2, nc="00000001"):
    challenge = parse_challenge(challenge_value)
    params = {"nonce": challenge.get("nonce"), "nc": nc, "cnonce": "c0ffee"}
    algorithm = challenge.get("algorithm")
    uri = first.invite.uri
    response = expected_response(
        algorithm,
        ACCOUNT["username"],
        ACCOUNT["realm"],
        password,
        "INVITE",
        uri,
        params,
    )
    authorization = (
        f'Digest username="{ACCOUNT["username"]}", realm="{ACCOUNT["realm"]}", '
        f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", '
        f'algorithm={algorithm}, qop=auth, nc={nc}, cnonce="c0ffee"'
    )
    return lab.caller.invite(
        call_id=first.invite.call_id,
        extra=(
            ("From", first.invite.headers.get("From")),
            ("CSeq", f"{cseq} INVITE"),
            ("Authorization", authorization),
        ),
    )


def test_inbound_challenge_then_success():
    lab = _inbound_lab()
    first = lab.caller.invite()
    lab.run()

    assert first.final is not None and first.final.status == 401
    challenges = first.final.headers.get_all("WWW-Authenticate")
    assert [parse_challenge(v).get("algorithm") for v in challenges] == [
        "SHA-256",
        "MD5",
    ]
    assert lab.callee.requests == []

    second = _retry_with(lab, first, challenges[0], password=ACCOUNT["password"])
    lab.run()
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()

    assert second.final is not None and second.final.status == 200
    b_invite = lab.callee.last("INVITE").request
    assert "Authorization" not in b_invite.headers
    lab.callee.send_in_dialog(lab.callee.dialog(), "BYE")
    lab.run()
    [record] = lab.sbc.records  # the 401 wrote no record
    assert record.disposition is Disposition.ANSWERED
    lab.assert_clean()


def test_inbound_wrong_password_forbidden_after_retry():
    lab = _inbound_lab()
    first = lab.caller.invite()
    lab.run()
    challenge = first.final.headers.get_all("WWW-Authenticate")[1]

    second = _retry_with(lab, first, challenge, password="not-it")
    lab.run()

    assert second.final is not None and second.final.status == 403
    assert "WWW-Authenticate" not in second.final.headers
    assert lab.callee.requests == []
    [record] = lab.sbc.records
    assert record.disposition is Disposition.REJECTED and record.final_status == 403
    lab.assert_clean()


def test_inbound_stale_nonce_challenged_again_with_stale_true():
    lab = _inbound_lab()
    first = lab.caller.invite()
    lab.run()
    challenge = first.final.headers.get_all("WWW-Authenticate")[0]
    lab.advance(301)  # past the nonce lifetime

    second = _retry_with(lab, first, challenge, password=ACCOUNT["password"])
    lab.run()

    assert second.final is not None and second.final.status == 401
    again = [
        parse_challenge(v) for v in second.final.headers.get_all("WWW-Authenticate")
    ]
    assert all(c.stale for c in again)
    assert again[0].get("nonce") != parse_challenge(challenge).get("nonce")
    assert lab.callee.requests == []


def test_inbound_digest_only_trunk_named_by_username():
    inbound = {"digest": ACCOUNT}
    lab = Lab(config=lab_config({"carrier": {"inbound": inbound}}))
    first = lab.caller.invite()
    lab.run()
    challenge = first.final.headers.get_all("WWW-Authenticate")[0]

    second = _retry_with(lab, first, challenge, password=ACCOUNT["password"])
    lab.run()

    assert first.final.status == 401
    assert lab.callee.methods() == ["INVITE"]
    lab.callee.respond(lab.callee.last("INVITE"), 486)
    lab.run()
    assert second.final.status == 486


# -- Outbound: a carrier's 401/407 on the B-leg ---------------------------------

OUTBOUND = {"username": "sbc-user", "password": "carrier-pw", "realm": "pbx.example"}


def _challenge_header(status):
    return "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"


def _challenge(
    lab,
    phone,
    status,
    nonce="abc123",
    algorithm="SHA-256",
    stale=False,
    realm="pbx.example",
):
    value = (
        f'Digest realm="{realm}", nonce="{nonce}", '
        f'algorithm={algorithm}, qop="auth", opaque="op1"'
    ) + (", stale=true" if stale else "")
    phone.respond(
        phone.last("INVITE"), status, extra=((_challenge_header(status), value),)
    )
    lab.run()


@pytest.mark.parametrize("status", [401, 407])
def test_outbound_challenge_answered(status):
    lab = Lab(config=lab_config({"pbx": {"outbound_auth": OUTBOUND}}))
    call = lab.caller.invite()
    lab.run()
    first = lab.callee.last("INVITE").request

    _challenge(lab, lab.callee, status)

    second = lab.callee.last("INVITE").request
    assert second is not first
    assert second.call_id == first.call_id and second.from_tag == first.from_tag
    assert second.cseq.number == first.cseq.number + 1
    assert second.top_via.branch != first.top_via.branch
    name = "Authorization" if status == 401 else "Proxy-Authorization"
    [credentials] = (
        second.authorization if status == 401 else second.proxy_authorization
    )
    assert name in second.headers
    assert credentials.get("opaque") == "op1" and credentials.get("uri") == second.uri
    expected = expected_response(
        "SHA-256",
        "sbc-user",
        "pbx.example",
        "carrier-pw",
        "INVITE",
        second.uri,
        credentials.params,
    )
    assert credentials.get("response") == expected
    assert all(c.status < 400 for c in call.responses), (
        "the challenge must not reach the caller"
    )

    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()
    assert call.final is not None and call.final.status == 200
    lab.callee.send_in_dialog(lab.callee.dialog(), "BYE")
    lab.run()
    [record] = lab.sbc.records
    assert record.disposition is Disposition.ANSWERED
    lab.assert_clean()


def test_outbound_second_challenge_relayed_to_caller():
    lab = Lab(config=lab_config({"pbx": {"outbound_auth": OUTBOUND}}))
    call = lab.caller.invite()
    lab.run()

    _challenge(lab, lab.callee, 407, nonce="n1")
    _challenge(lab, lab.callee, 407, nonce="n2")

    assert lab.callee.methods() == ["INVITE", "INVITE"]
    assert call.final is not None and call.final.status == 407
    assert lab.backup.requests == []
    lab.assert_clean()


def test_outbound_second_challenge_fails_over_when_configured():
    pbx = {"outbound_auth": OUTBOUND, "failover_codes": [401, "5xx"]}
    lab = Lab(config=lab_config({"pbx": pbx}))
    call = lab.caller.invite()
    lab.run()

    _challenge(lab, lab.callee, 401, nonce="n1")
    _challenge(lab, lab.callee, 401, nonce="n2")
    lab.backup.respond(lab.backup.last("INVITE"), 200, body=ANSWER)
    lab.run()

    assert call.final is not None and call.final.status == 200
    assert "Authorization" not in lab.backup.last("INVITE").request.headers


def test_outbound_challenge_of_other_realm_not_answered():
    auth = {**OUTBOUND, "realm": "elsewhere.example"}
    lab = Lab(config=lab_config({"pbx": {"outbound_auth": auth}}))
    call = lab.caller.invite()
    lab.run()

    _challenge(lab, lab.callee, 401)

    assert lab.callee.methods() == ["INVITE"]
    assert call.final is not None and call.final.status == 401


def test_outbound_challenge_without_credentials_relayed():
    lab = Lab()
    call = lab.caller.invite()
    lab.run()

    _challenge(lab, lab.callee, 407)

    assert call.final is not None and call.final.status == 407
    assert lab.backup.requests == []
    lab.assert_clean()


def test_outbound_stale_challenge_answered_once_more():
    lab = Lab(config=lab_config({"pbx": {"outbound_auth": OUTBOUND}}))
    call = lab.caller.invite()
    lab.run()

    _challenge(lab, lab.callee, 407, nonce="n1")
    _challenge(lab, lab.callee, 407, nonce="n2", stale=True)
    third = lab.callee.last("INVITE").request
    _challenge(lab, lab.callee, 407, nonce="n3", stale=True)

    assert lab.callee.methods() == ["INVITE"] * 3
    [credentials] = third.proxy_authorization
    assert credentials.get("nonce") == "n2" and third.cseq.number == 3
    assert call.final is not None and call.final.status == 407
    lab.assert_clean()


def test_outbound_proxy_then_callee_challenge_both_answered():
    auth = {"username": "sbc-user", "password": "carrier-pw"}
    lab = Lab(config=lab_config({"pbx": {"outbound_auth": auth}}))
    call = lab.caller.invite()
    lab.run()

    _challenge(lab, lab.callee, 407, nonce="p1", realm="proxy.example")
    _challenge(lab, lab.callee, 401, nonce="u1", realm="pbx.example")
    third = lab.callee.last("INVITE").request
    lab.callee.respond(lab.callee.last("INVITE"), 200, body=ANSWER)
    lab.run()

    [proxy] = third.proxy_authorization
    [user] = third.authorization
    assert (proxy.get("realm"), proxy.get("nonce")) == ("proxy.example", "p1")
    assert (user.get("realm"), user.get("nonce")) == ("pbx.example", "u1")
    assert third.cseq.number == 3
    assert call.final is not None and call.final.status == 200


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ('Digest username="carrier1", realm="unterminated', 400),
        ("Basic Y2FycmllcjE6czNjcmV0LXB3", 401),
        ('Digest username="carrier1", realm="other.example", nonce="x"', 401),
    ],
)
def test_inbound_unusable_authorization_variants(authorization, status):
    lab = _inbound_lab()

    call = lab.caller.invite(extra=(("Authorization", authorization),))
    lab.run()

    assert call.final is not None and call.final.status == status
    assert lab.callee.requests == []
